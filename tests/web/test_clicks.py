"""Counted links in a real send of the sample issue, followed through the real web app.

The sample publication sets ``sending.clicks: aggregate``. The issue is sent
in-process to three people through an in-memory transport; their messages'
links are then followed the way a person, a mail gateway and a forger would.
Counts are written by the app's own counter (``flush`` is what its thread
does every second).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from newsletter.authoring.content import load_issue
from newsletter.authoring.render import render_issue
from newsletter.audience.subscribers import add_subscriber, create_list, get_list
from newsletter.sending.delivery import Deliverer
from newsletter.sending.scheduling import schedule_send
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import engine_for, session_scope
from newsletter.store.issues import store_issue
from newsletter.store.models import ClickCount, ClickHistory, ClickMessage, PageView, PublicationRow, Send, Subscriber
from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE
from tests.memory_transport import MemoryTransport

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"
PEOPLE = ("ann@example.com", "bob@example.com", "cat@example.com")


@pytest.fixture(scope="module")
def rendered_sample():
    return render_issue(load_issue(SAMPLE_ISSUE))


@pytest.fixture
def sent(settings, rendered_sample):
    """The sample issue sent to three people; their messages by address, and the send's id."""
    return send_sample(settings, rendered_sample)


def send_sample(settings, rendered_sample, clicks: str = ""):
    settings = replace(settings, base_url="https://news.example.org", transport="outbox")
    issue = rendered_sample.issue
    with session_scope(settings) as session:
        row = store_issue(session, rendered_sample)
        if clicks:
            session.get(PublicationRow, row.publication_id).sending = {"clicks": clicks}
        create_list(session, issue.publication.slug, "news", "Monthly news")
        for address in PEOPLE:
            add_subscriber(session, address, address.split("@")[0].title(), ["news"],
                           publication_slug=issue.publication.slug)
        send = schedule_send(session, row, get_list(session, issue.publication.slug, "news"), at=None)
        send_id = send.id
    mail = MemoryTransport()
    with session_scope(settings) as session:
        deliverer = Deliverer(settings, mail)
        for batch_id in claim_due_sends(session, settings):
            deliverer.deliver_batch(session, batch_id)
    messages = {e.recipient: message_from_bytes(e.message, policy=policy.default) for e in mail.accepted}
    assert sorted(messages) == sorted(PEOPLE)
    app = create_app(settings)
    counter = app.extensions["newsletter.clicks"]
    counter.clock = lambda: time.time() + 120  # the people below read their mail two minutes later
    return settings, app, messages, send_id


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def counted_links(html: str) -> list[str]:
    return re.findall(r'href="(https://news\.example\.org/c/[^"]+)"', html)


def path_of(url: str) -> str:
    return url.removeprefix("https://news.example.org").replace("&amp;", "&")


def counts(settings) -> dict[int, tuple[int, int, int]]:
    with session_scope(settings) as session:
        out: dict[int, tuple[int, int, int]] = {}
        for row in session.scalars(select(ClickCount)):
            h, m, u = out.get(row.link, (0, 0, 0))
            out[row.link] = (h + row.human, m + row.machine, u + row.unsure)
        return out


def page_text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def test_outside_links_go_through_the_redirect_and_name_no_one(sent):
    settings, _, messages, send_id = sent
    ann, bob = html_of(messages["ann@example.com"]), html_of(messages["bob@example.com"])
    links = counted_links(ann)
    assert len(links) == 15  # 14 outside links and the trap
    assert not re.search(r'href="https://www\.example\.org', ann)
    # Unsubscribe, preferences and the web copy are direct.
    assert re.search(r'href="https://news\.example\.org/u/[^"]+"', ann)
    assert re.search(r'href="https://news\.example\.org/p/[^"]+"', ann)
    assert 'href="https://news.example.org/together-were-better/2021-09/">View it as a web page' in ann
    # The text part's links too.
    assert "https://www.example.org" not in text_of(messages["ann@example.com"])
    assert text_of(messages["ann@example.com"]).count("https://news.example.org/c/") == 14
    # Two people's links differ only in the random m=; nothing in them is made from the person.
    strip = lambda html: [re.sub(r"\?m=[^\"]+", "", link) for link in counted_links(html)]
    assert strip(ann) == strip(bob)
    nonces = {re.search(r"\?m=([^.]+)\.", link).group(1) for link in counted_links(ann)}
    assert len(nonces) == 1 and nonces.isdisjoint({re.search(r"\?m=([^.]+)\.", l).group(1) for l in counted_links(bob)})
    # A token says send, link and address; m= says a random nonce and a time, nothing more.
    from newsletter.authoring.counted_links import read_ref, read_token
    for link in links:
        token, ref = link.split("/c/", 1)[1].split("?m=")
        found = read_token(settings.signing_keys, token)
        assert found.send_id == send_id and token.count(".") == 3
        assert ref.count(".") == 1 and read_ref(settings.signing_keys, ref).subscriber_id is None


def test_a_person_following_a_link_is_redirected_and_counted_human_once_per_click(sent):
    settings, app, messages, _ = sent
    client = app.test_client()
    link = counted_links(html_of(messages["ann@example.com"]))[0]

    answers = [client.get(path_of(link), headers={"User-Agent": CHROME}) for _ in range(2)]
    app.extensions["newsletter.clicks"].flush()

    assert [a.status_code for a in answers] == [302, 302]
    assert answers[0].headers["Location"] == "https://www.example.org/ics/priorities/frailty"
    assert answers[0].headers["Cache-Control"] == "no-store"
    assert counts(settings) == {1: (2, 0, 0)}
    with session_scope(settings) as session:
        assert [(m.human, m.machine) for m in session.scalars(select(ClickMessage))] == [(2, 0)]


def test_a_mail_gateway_fetching_every_link_is_counted_machine_and_moves_no_human_figure(sent):
    settings, app, messages, _ = sent
    client = app.test_client()
    person = counted_links(html_of(messages["bob@example.com"]))[3]
    client.get(path_of(person), headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    before = {link: figures[0] for link, figures in counts(settings).items()}

    for link in counted_links(html_of(messages["ann@example.com"])):  # HEAD then GET of each, within a second
        client.head(path_of(link), headers={"User-Agent": SCANNER})
        client.get(path_of(link), headers={"User-Agent": SCANNER})
    app.extensions["newsletter.clicks"].flush()

    after = counts(settings)
    assert {link: figures[0] for link, figures in after.items() if figures[0]} == before == {4: 1}
    assert sum(figures[1] for figures in after.values()) == 30
    assert all(figures[1] == 2 for figures in after.values())


def test_a_browser_that_follows_every_link_is_caught_by_the_trap_and_the_burst(sent):
    settings, app, messages, _ = sent
    client = app.test_client()
    links = counted_links(html_of(messages["cat@example.com"]))
    for link in [links[0], links[-1], links[1]]:  # a link, then the trap nobody can see, then another
        client.get(path_of(link), headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    assert counts(settings) == {1: (0, 1, 0), 0: (0, 1, 0), 2: (0, 1, 0)}


def test_a_click_in_the_first_seconds_after_delivery_is_unsure(sent):
    settings, app, messages, _ = sent
    app.extensions["newsletter.clicks"].clock = time.time
    app.test_client().get(path_of(counted_links(html_of(messages["ann@example.com"]))[2]), headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    assert counts(settings) == {3: (0, 0, 1)}


@pytest.mark.parametrize("kind", ["tampered", "another address", "garbage", "huge query", "no such send"])
def test_a_bad_link_gets_the_not_found_page_and_counts_nothing(sent, kind):
    settings, app, messages, send_id = sent
    link = path_of(counted_links(html_of(messages["ann@example.com"]))[0])
    token = link.split("/c/")[1].split("?")[0]
    send, number, url, signature = token.split(".")
    from newsletter.authoring.counted_links import _b64, _signer
    path = {
        "tampered": link.replace(signature, signature[::-1]),
        "another address": f"/c/{send}.{number}.{_b64(b'https://evil.example.net/')}.{signature}",
        "garbage": "/c/%00%0d%0a../../etc",
        "huge query": link + "x" * 5000,
        "no such send": "/c/" + _signer(settings.signing_keys).token(send_id + 99, 1, "https://www.example.org/"),
    }[kind]
    response = app.test_client().get(path, headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    assert response.status_code == 404 and "Location" not in response.headers
    assert "This link is not valid" in page_text(response)
    assert counts(settings) == {}
    if kind in ("tampered", "another address"):  # the send is known: the page wears the publication's colours
        assert "#005eb8" in response.get_data(as_text=True)


def test_no_table_holds_a_click_that_names_a_subscriber_when_aggregate_is_set(sent):
    settings, app, messages, _ = sent
    client = app.test_client()
    for address, message in messages.items():
        client.get(path_of(counted_links(html_of(message))[5]), headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    assert counts(settings) == {6: (3, 0, 0)}
    with session_scope(settings) as session:
        schema = inspect(session.connection())
        click_tables = [t for t in schema.get_table_names() if "click" in t or t == "page_views"]
        assert session.scalar(select(ClickHistory.id).limit(1)) is None
        people = {str(i) for i in session.scalars(select(Subscriber.id))} | set(messages)
        for table in click_tables:
            columns = {c["name"] for c in schema.get_columns(table)}
            assert not {"subscriber_id", "email", "address", "ip", "client"} & columns or table == "click_history"
            for row in session.execute(Send.metadata.tables[table].select()):
                assert not {str(v) for v in row if isinstance(v, str)} & people


def test_the_redirect_answers_while_the_database_is_away_and_counts_wait_for_it(sent, tmp_path):
    settings, app, messages, _ = sent
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("the database is taken away by moving its file")
    path = Path(settings.effective_database_url.split("///", 1)[1])
    link = path_of(counted_links(html_of(messages["ann@example.com"]))[1])
    engine_for(settings.effective_database_url).dispose()
    away = path.rename(tmp_path / "away.sqlite")
    try:
        path.mkdir()  # not a database: every connection fails
        answer = app.test_client().get(link, headers={"User-Agent": CHROME})
        assert answer.status_code == 302 and answer.headers["Location"].startswith("https://news.example.org/")
        assert app.extensions["newsletter.clicks"].flush() is False
    finally:
        path.rmdir()
        away.rename(path)
    engine_for(settings.effective_database_url).dispose()
    assert app.extensions["newsletter.clicks"].flush() is True
    assert counts(settings) == {2: (1, 0, 0)}


def test_web_copy_pages_are_counted_per_page_and_day_without_a_cookie(sent):
    settings, app, _, _ = sent
    client = app.test_client()
    first = client.get("/together-were-better/2021-09/", headers={"User-Agent": CHROME})
    client.get("/together-were-better/2021-09/", headers={"User-Agent": CHROME})
    client.get("/together-were-better/2021-09/", headers={"User-Agent": "curl/8.5.0"})
    client.get("/together-were-better/2021-09/system-savings/", headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    assert first.status_code == 200 and "Set-Cookie" not in first.headers
    with session_scope(settings) as session:
        assert sorted((v.path, v.views) for v in session.scalars(select(PageView))) == [
            ("2021-09/", 2), ("2021-09/system-savings/", 1)]


def test_per_person_keeps_each_persons_clicks_and_erasure_removes_them(settings, rendered_sample):
    from newsletter.audience.erasure import erase_subscriber

    settings, app, messages, send_id = send_sample(settings, rendered_sample, "per_person")
    client = app.test_client()
    for address in ("ann@example.com", "bob@example.com"):
        client.get(path_of(counted_links(html_of(messages[address]))[4]), headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    with session_scope(settings) as session:
        history = session.execute(select(Subscriber.email, ClickHistory.link, ClickHistory.kind)
                                  .join(Subscriber, Subscriber.id == ClickHistory.subscriber_id)).all()
        assert sorted(history) == [("ann@example.com", 5, "human"), ("bob@example.com", 5, "human")]
        erase_subscriber(session, "ann@example.com")
    with session_scope(settings) as session:
        assert session.execute(select(ClickHistory.link)).scalars().all() == [5]
    assert counts(settings) == {5: (2, 0, 0)}  # the counts stay: they never named anyone


def test_sends_clicks_shows_human_machine_and_unsure_by_link_as_text_and_json(sent, monkeypatch):
    import json

    from click.testing import CliRunner

    from newsletter.cli import main
    from newsletter.config import get_settings

    settings, app, messages, send_id = sent
    client = app.test_client()
    links = counted_links(html_of(messages["ann@example.com"]))
    client.get(path_of(links[6]), headers={"User-Agent": CHROME})  # a person
    client.get(path_of(links[6]), headers={"User-Agent": SCANNER})  # a scanner
    app.extensions["newsletter.clicks"].flush()
    monkeypatch.setenv("DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("NEWSLETTER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        as_text = CliRunner().invoke(main, ["sends", "clicks", str(send_id)], catch_exceptions=False)
        as_json = CliRunner().invoke(main, ["sends", "clicks", str(send_id), "--json"], catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    assert as_text.exit_code == 0 and "3 delivered; 1 messages with a human click" in as_text.output
    assert "https://111.nhs.uk/" in as_text.output
    data = json.loads(as_json.output)
    assert data["delivered"] == 3 and data["messages_with_human_click"] == 1 and data["clicks"] == "aggregate"
    assert len(data["links"]) == 14
    nhs = [link for link in data["links"] if link["url"] == "https://111.nhs.uk/"]
    assert nhs == [{"number": 7, "url": "https://111.nhs.uk/", "section": "NHS 111", "human": 1, "machine": 1, "unsure": 0}]
    assert sum(link["human"] for link in data["links"]) == 1


def test_metrics_count_clicks_by_publication_and_class(sent):
    settings, app, messages, _ = sent
    client = app.test_client()
    link = path_of(counted_links(html_of(messages["bob@example.com"]))[8])
    client.get(link, headers={"User-Agent": CHROME})
    client.head(link, headers={"User-Agent": CHROME})
    app.extensions["newsletter.clicks"].flush()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'newsletter_clicks_total{class="human",publication="together-were-better"} 1.0' in text
    assert 'newsletter_clicks_total{class="machine",publication="together-were-better"} 1.0' in text
    assert 'newsletter_clicks_total{class="unsure",publication="together-were-better"} 0.0' in text
