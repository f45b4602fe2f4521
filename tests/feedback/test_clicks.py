"""The rules that class a click (docs/clicks.md), each on its own, and the counts they leave."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import select

from newsletter.feedback.clicks import (
    BURST_SECONDS, EARLY_SECONDS, HUMAN, MACHINE, UNSURE, Classifier, Click, Deltas, request_rule, write_deltas,
)
from newsletter.authoring.counted_links import TRAP, BadClickToken, ClickRefs, issue_links, read_ref, read_token, rewrite
from newsletter.store.models import ClickCount, ClickMessage, IssueRow, MailingList, PageView, PublicationRow, Send

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.1 Mobile/15E148 Safari/604.1")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
KEYS = ("newest-key", "older-key")
T0 = 1_800_000_000.0  # a moment, well after the messages below were made
MADE = int(T0) - 3600


# --- rules 1 and 2: the request alone ---------------------------------------------------


@pytest.mark.parametrize("agent", [CHROME, SAFARI, FIREFOX])
def test_a_browser_get_is_not_a_machine_by_the_request_alone(agent):
    assert request_rule("GET", {"User-Agent": agent}) == ""


def test_a_head_request_is_a_machine():
    assert request_rule("HEAD", {"User-Agent": CHROME}) == "request"


@pytest.mark.parametrize("header", [("Purpose", "prefetch"), ("Sec-Purpose", "prefetch;prerender"),
                                    ("X-Purpose", "preview"), ("X-Moz", "prefetch")])
def test_a_prefetch_is_a_machine(header):
    assert request_rule("GET", {"User-Agent": CHROME, header[0]: header[1]}) == "request"


@pytest.mark.parametrize("agent", [
    "", "python-requests/2.31.0", "curl/8.5.0", "Go-http-client/1.1", "Java/17.0.2", "okhttp/4.12.0",
    "Wget/1.21", "Mozilla/5.0 (compatible; Proofpoint URL Defense)", "Mimecast-URL-Scanner",
    "Barracuda Sentinel (EE)", "Mozilla/5.0 (compatible; bingbot/2.0)", "Microsoft Office Word 2014",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b",
])
def test_scanners_and_libraries_are_machines_by_their_user_agent(agent):
    assert request_rule("GET", {"User-Agent": agent}) == "agent"


# --- rules 3 to 6: what one client did with one message ----------------------------------


def click(link, at, *, client=b"client-a", nonce="nonceAAA", made_at=MADE, reason="", send_id=1):
    return Click(send_id=send_id, link=link, at=at, client=client, nonce=nonce, made_at=made_at, machine_reason=reason)


def totals(deltas: Deltas) -> dict[str, int]:
    out = {HUMAN: 0, MACHINE: 0, UNSURE: 0}
    for values in deltas.counts.values():
        for name, v in zip((HUMAN, MACHINE, UNSURE), values):
            out[name] += v
    return out


def test_a_person_clicking_two_links_a_while_apart_is_human_twice():
    classifier, deltas = Classifier(), Deltas()
    kinds = [classifier.classify(click(1, T0), deltas), classifier.classify(click(2, T0 + 20), deltas)]
    assert kinds == [HUMAN, HUMAN]
    assert totals(deltas) == {HUMAN: 2, MACHINE: 0, UNSURE: 0}
    assert deltas.messages == {(1, "nonceAAA"): [2, 0, 0]}


def test_a_burst_of_links_from_one_message_is_a_machine_and_its_earlier_fetches_too():
    classifier, deltas = Classifier(), Deltas()
    kinds = [classifier.classify(click(n, T0 + n * 0.1), deltas) for n in (1, 2, 3, 4)]
    assert kinds == [HUMAN, HUMAN, MACHINE, MACHINE]
    assert totals(deltas) == {HUMAN: 0, MACHINE: 4, UNSURE: 0}  # the first two moved to machine
    assert deltas.messages == {(1, "nonceAAA"): [0, 4, 0]}


def test_people_behind_one_address_clicking_their_own_messages_are_not_a_burst():
    classifier, deltas = Classifier(), Deltas()
    kinds = [classifier.classify(click(n, T0, nonce=f"nonce{n:03d}"), deltas) for n in (1, 2, 3, 4)]
    assert kinds == [HUMAN] * 4


def test_the_same_links_spread_over_more_than_the_window_are_human():
    classifier, deltas = Classifier(), Deltas()
    kinds = [classifier.classify(click(n, T0 + n * (BURST_SECONDS + 1)), deltas) for n in (1, 2, 3)]
    assert kinds == [HUMAN] * 3


def test_following_the_trap_makes_the_client_a_machine_before_and_after():
    classifier, deltas = Classifier(), Deltas()
    kinds = [classifier.classify(click(1, T0), deltas), classifier.classify(click(TRAP, T0 + 1), deltas),
             classifier.classify(click(5, T0 + 2), deltas)]
    assert kinds == [HUMAN, MACHINE, MACHINE]
    assert totals(deltas) == {HUMAN: 0, MACHINE: 3, UNSURE: 0}
    # Another client's click of the same issue is untouched.
    assert classifier.classify(click(1, T0 + 2, client=b"client-b", nonce="nonceBBB"), deltas) == HUMAN


def test_a_click_seconds_after_the_message_was_made_is_unsure():
    classifier, deltas = Classifier(), Deltas()
    assert classifier.classify(click(1, T0, made_at=int(T0) - 3), deltas) == UNSURE
    assert classifier.classify(click(1, T0, made_at=int(T0) - EARLY_SECONDS - 1, nonce="nonceBBB"), deltas) == HUMAN


def test_a_machine_by_its_request_stays_a_machine_and_moves_nothing_else():
    classifier, deltas = Classifier(), Deltas()
    assert classifier.classify(click(1, T0, reason="agent"), deltas) == MACHINE
    assert classifier.classify(click(2, T0 + 30, client=b"client-b", nonce="nonceBBB"), deltas) == HUMAN
    assert totals(deltas) == {HUMAN: 1, MACHINE: 1, UNSURE: 0}


def test_client_digests_are_forgotten_after_the_window():
    classifier, deltas = Classifier(), Deltas()
    classifier.classify(click(1, T0), deltas)
    classifier.classify(click(1, T0 + 3 * BURST_SECONDS, client=b"client-b"), deltas)
    assert len(classifier) == 1


# --- links and tokens --------------------------------------------------------------------


HTML = ('<html><body><a href="%%web_url%%">View it as a web page</a>'
        '<h2 id="news">News &amp; views</h2><p><a class="x" href="https://example.org/a?x=1&amp;y=2">A</a> '
        '<a href="mailto:editor@example.org">write</a> <a href="https://example.org/b">B</a></p>'
        '<a href="%%unsubscribe_url%%">Unsubscribe</a></body></html>')
TEXT = "Read https://example.org/a?x=1&y=2. Also (https://example.org/c), and %%unsubscribe_url%%\n"


def test_every_outside_link_is_numbered_once_with_its_section():
    links = issue_links(HTML, TEXT)
    assert [(l.number, l.url, l.section) for l in links] == [
        (1, "https://example.org/a?x=1&y=2", "News & views"), (2, "https://example.org/b", "News & views"),
        (3, "https://example.org/c", ""),
    ]


def test_rewriting_leaves_placeholders_and_mailto_alone_and_adds_one_hidden_trap():
    html, text, links = rewrite(HTML, TEXT, keys=KEYS, base_url="https://news.example.org", send_id=42)
    assert 'href="%%web_url%%"' in html and 'href="%%unsubscribe_url%%"' in html
    assert 'href="mailto:editor@example.org"' in html
    assert "https://example.org/" not in html.replace("mailto:", "")
    assert html.count("https://news.example.org/c/") == 3  # two links and the trap
    assert 'style="display:none' in html and 'aria-hidden="true"' in html and html.index("aria-hidden") < html.index("</body>")
    assert text.count("https://news.example.org/c/") == 2 and "%%unsubscribe_url%%" in text
    assert ". Also (" in text and "), and" in text  # the punctuation after a link stays
    assert text.count("?m=%%click_ref%%") == 2


def test_a_token_names_the_send_and_link_and_is_refused_when_altered():
    html, _, _ = rewrite(HTML, TEXT, keys=KEYS, base_url="https://news.example.org", send_id=42)
    token = html.split("/c/")[1].split("?")[0]
    assert read_token(KEYS, token).send_id == 42 and read_token(KEYS, token).url == "https://example.org/a?x=1&y=2"
    assert read_token(("a-new-key", *KEYS), token).link == 1  # still good after a rotation
    send, number, url, signature = token.split(".")
    from newsletter.authoring.counted_links import _b64
    evil = _b64(b"https://evil.example.net/")
    for bad in (f"{send}.{number}.{evil}.{signature}", f"{send}.2.{url}.{signature}", f"2.{number}.{url}.{signature}",
                token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "garbage", "a.b.c.d", token + "." + token,
                "é.1.2.3"):
        with pytest.raises(BadClickToken):
            read_token(KEYS, bad)
    with pytest.raises(BadClickToken):
        read_token(("another-install",), token)


def test_the_per_message_part_is_random_and_names_a_person_only_per_person():
    refs = ClickRefs("aggregate", KEYS)
    first, second = refs.make(7), refs.make(7)
    assert first != second and first.split(".")[0] != second.split(".")[0]
    assert read_ref(KEYS, first).subscriber_id is None and "7" not in first.split(".")[0:1]
    person = ClickRefs("per_person", KEYS).make(7)
    assert read_ref(KEYS, person).subscriber_id == 7
    forged = person.rsplit(".", 2)[0] + ".8." + person.rsplit(".", 1)[1]
    assert read_ref(KEYS, forged).subscriber_id is None
    assert read_ref(KEYS, "x" * 500) is None and read_ref(KEYS, "") is None


# --- the counts in the database ----------------------------------------------------------


def make_send(session) -> tuple[PublicationRow, Send]:
    publication = PublicationRow(slug="p", name="P", from_name="P", from_email="p@example.org", reply_to="",
                                 postal_address="", web_base_url="https://example.org/p/", settings={})
    session.add(publication)
    session.flush()
    mailing_list = MailingList(publication_id=publication.id, slug="l", name="L")
    issue = IssueRow(publication_id=publication.id, slug="i", title="I", subject="S", issue_date=date(2026, 1, 1),
                     html="", text="", content_hash="x")
    session.add_all([mailing_list, issue])
    session.flush()
    send = Send(issue_id=issue.id, list_id=mailing_list.id, scheduled_at=datetime.now(timezone.utc))
    session.add(send)
    session.flush()
    return publication, send


def test_counts_add_up_and_clicks_of_a_send_that_is_gone_are_dropped(session):
    publication, send = make_send(session)
    hour = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    for _ in range(2):
        deltas = Deltas()
        deltas.add(send.id, 1, hour, "nonceAAA", HUMAN)
        deltas.add(send.id, 1, hour, "nonceBBB", MACHINE)
        deltas.add(send.id + 1000, 1, hour, "nonceCCC", HUMAN)  # no such send
        deltas.views[(publication.id, "i/", date(2026, 1, 1))] = 3
        write_deltas(session, deltas)
    session.flush()
    count = session.scalars(select(ClickCount)).one()
    assert (count.send_id, count.link, count.hour, count.human, count.machine, count.unsure) == (send.id, 1, hour, 2, 2, 0)
    assert sorted((m.nonce, m.human, m.machine) for m in session.scalars(select(ClickMessage))) == [
        ("nonceAAA", 2, 0), ("nonceBBB", 0, 2)]
    assert session.scalars(select(PageView.views)).one() == 6


def test_a_burst_spread_over_two_web_processes_is_caught_through_short_lived_redis_keys(settings, redis_url):
    import redis

    from newsletter.feedback.click_counter import ClickCounter, SharedMemory
    from newsletter.store.db import session_scope

    with session_scope(settings) as db:
        send_id = make_send(db)[1].id
    shared = replace(settings, redis_url=redis_url)
    first, second = ClickCounter(shared), ClickCounter(shared)
    for counter in (first, second):
        counter._pid = os.getpid()  # written by hand below, not by a thread
    first.record(click(1, T0, send_id=send_id))
    first.flush()
    second.record(click(2, T0 + 1, send_id=send_id))
    second.record(click(3, T0 + 2, send_id=send_id))
    second.flush()
    with session_scope(settings) as db:
        rows = db.execute(select(ClickCount.human, ClickCount.machine)).all()
    assert (sum(r[0] for r in rows), sum(r[1] for r in rows)) == (0, 3)
    # The keys name a digest of the client, never its address, and go within the window.
    keys = redis.Redis.from_url(redis_url).keys(f"{SharedMemory.PREFIX}*")
    assert len(keys) == 1 and b"client-a" not in keys[0]
    assert 0 < redis.Redis.from_url(redis_url).pttl(keys[0]) <= BURST_SECONDS * 1000


def test_without_redis_each_process_goes_on_with_its_own_memory(settings):
    from newsletter.feedback.click_counter import ClickCounter
    from newsletter.store.db import session_scope

    with session_scope(settings) as db:
        send_id = make_send(db)[1].id
    counter = ClickCounter(replace(settings, redis_url="redis://127.0.0.1:1/0"))  # nothing listens there
    counter._pid = os.getpid()
    for n in (1, 2, 3):
        counter.record(click(n, T0 + n, send_id=send_id))
    assert counter.flush() is True
    with session_scope(settings) as db:
        assert sum(db.scalars(select(ClickCount.machine))) == 3
