"""One-click unsubscribe (RFC 8058) and the preferences page."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import select

from newsletter.sending.scheduling import schedule_send
from newsletter.sending.delivery import Deliverer
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, MailingList, Membership, PublicationRow, Subscriber
from newsletter.audience.subscribers import add_subscriber, create_list, get_list
from newsletter.audience.tokens import CONFIRM, make_token, preferences_url, unsubscribe_url
from newsletter.web import create_app
from tests.memory_transport import MemoryTransport

PUB = "together-were-better"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def world(settings, publication_row):
    """Ann and Bob on two lists of one publication, and a send of an issue to "news"."""
    with session_scope(settings) as session:
        publication_row(session, slug=PUB, web_base_url=f"{settings.base_url}/{PUB}/")
        create_list(session, PUB, "news", "Monthly news")
        create_list(session, PUB, "events", "Events")
        ann = add_subscriber(session, "ann@example.com", "Ann", ["news", "events"], publication_slug=PUB)
        add_subscriber(session, "bob@example.com", "Bob", ["news"], publication_slug=PUB)
        issue = IssueRow(publication_id=session.scalar(select(PublicationRow.id)), slug="2021-09",
                         title="September", subject="September news", issue_date=date(2021, 9, 1),
                         html="<p>Hello %%name%%</p>", text="Hello %%name%%", content_hash="x")
        session.add(issue)
        session.flush()
        send = schedule_send(session, issue, get_list(session, PUB, "news"), at=None)
        return {"ann": ann.id, "send": send.id}


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def path_of(url: str, settings) -> str:
    return url.removeprefix(settings.base_url)


def statuses(settings, email="ann@example.com") -> dict[str, str]:
    with session_scope(settings) as session:
        rows = session.execute(
            select(MailingList.slug, Membership.status).join(Membership).join(Subscriber).where(Subscriber.email == email)
        ).all()
        return dict(rows)


def text_of(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def test_opening_the_link_shows_a_button_and_unsubscribes_nobody(client, settings, world):
    path = path_of(unsubscribe_url(settings, world["send"], world["ann"]), settings)
    response = client.get(path)

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in html
    assert f'<form method="post" action="{path}">' in html
    assert statuses(settings) == {"news": "confirmed", "events": "confirmed"}


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_one_post_unsubscribes_from_the_sends_list_at_once_and_can_be_repeated(settings, world, encoding):
    client = create_app(settings).test_client(use_cookies=False)
    path = path_of(unsubscribe_url(settings, world["send"], world["ann"]), settings)
    content_type = "multipart/form-data" if encoding == "multipart" else "application/x-www-form-urlencoded"

    answers = [client.post(path, data=ONE_CLICK, content_type=content_type) for _ in range(2)]

    assert [a.status_code for a in answers] == [200, 200]  # never a redirect
    assert "You are unsubscribed" in text_of(answers[0]) and "Monthly news" in text_of(answers[0])
    assert statuses(settings) == {"news": "unsubscribed", "events": "confirmed"}
    assert statuses(settings, "bob@example.com") == {"news": "confirmed"}


def test_unsubscribing_during_a_send_stops_the_message_not_yet_sent(settings, world):
    mail = MemoryTransport()
    with session_scope(settings) as session:
        batches = claim_due_sends(session, settings)  # the audience is frozen with Ann in it
    path = path_of(unsubscribe_url(settings, world["send"], world["ann"]), settings)
    assert create_app(settings).test_client().post(path, data=ONE_CLICK).status_code == 200

    with session_scope(settings) as session:
        deliverer = Deliverer(settings, mail)
        reports = [deliverer.deliver_batch(session, batch_id) for batch_id in batches]

    assert mail.recipients() == ["bob@example.com"]
    assert sum(r.skipped for r in reports) == 1


def test_a_post_that_does_not_ask_to_unsubscribe_changes_nothing(client, settings, world):
    path = path_of(unsubscribe_url(settings, world["send"], world["ann"]), settings)
    response = client.post(path, data={"List-Unsubscribe": "Maybe"})

    assert response.status_code == 400
    assert statuses(settings)["news"] == "confirmed"


@pytest.mark.parametrize("kind", ["tampered", "wrong purpose", "garbage", "unknown send"])
def test_a_bad_link_gets_a_404_page_and_changes_nothing(client, settings, world, kind):
    good = unsubscribe_url(settings, world["send"], world["ann"]).rsplit("/", 1)[1]
    token = {
        "tampered": good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"),
        "wrong purpose": make_token(settings, CONFIRM, [world["send"], world["ann"]]),
        "garbage": "%00%0d%0a",
        "unknown send": unsubscribe_url(settings, 999, world["ann"]).rsplit("/", 1)[1],
    }[kind]
    for response in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data=ONE_CLICK)):
        assert response.status_code == 404
        assert "This link is not valid" in text_of(response)
    assert statuses(settings)["news"] == "confirmed"


def csrf_from(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def test_the_preferences_page_shows_every_list_of_the_publication_with_the_persons_choices(client, settings, world):
    with session_scope(settings) as session:
        create_list(session, PUB, "jobs", "Vacancies")
    response = client.get(path_of(preferences_url(settings, world["ann"]), settings))
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert "<legend>Emails from Together We&#39;re Better</legend>" in html
    assert sorted(re.findall(r'<label for="list-\d+">([^<]+)</label>', html)) == ["Events", "Monthly news", "Vacancies"]
    assert re.search(r'value="\d+" checked>\s*<label for="list-\d+">Monthly news', html)
    assert re.search(r'value="\d+" checked>\s*<label for="list-\d+">Events', html)
    assert re.search(r'value="\d+">\s*<label for="list-\d+">Vacancies', html)


def test_saving_choices_changes_the_lists_at_once(client, settings, world):
    path = path_of(preferences_url(settings, world["ann"]), settings)
    with session_scope(settings) as session:
        jobs = create_list(session, PUB, "jobs", "Vacancies").id
        news = get_list(session, PUB, "news").id
    token = csrf_from(client.get(path))

    response = client.post(path, data={"csrf_token": token, "action": "save", "list": [str(news), str(jobs)]})

    assert response.status_code == 200 and "Your choices are saved" in text_of(response)
    assert statuses(settings) == {"news": "confirmed", "events": "unsubscribed", "jobs": "confirmed"}


def test_a_preferences_post_without_the_forms_token_changes_nothing(settings, world):
    client = create_app(settings).test_client(use_cookies=False)
    path = path_of(preferences_url(settings, world["ann"]), settings)

    response = client.post(path, data={"action": "leave"})

    assert response.status_code == 400 and "nothing was changed" in text_of(response)
    assert statuses(settings) == {"news": "confirmed", "events": "confirmed"}


def test_leaving_everything_and_coming_back(client, settings, world):
    path = path_of(preferences_url(settings, world["ann"]), settings)
    left = client.post(path, data={"csrf_token": csrf_from(client.get(path)), "action": "leave"})

    assert left.status_code == 200 and "You have left every list" in text_of(left)
    assert statuses(settings) == {"news": "unsubscribed", "events": "unsubscribed"}

    page = client.get(path)
    assert "You have left every list" in text_of(page) and " checked" not in page.get_data(as_text=True)
    with session_scope(settings) as session:
        events = get_list(session, PUB, "events").id
    client.post(path, data={"csrf_token": csrf_from(page), "action": "save", "list": [str(events)]})
    assert statuses(settings) == {"news": "unsubscribed", "events": "confirmed"}
    with session_scope(settings) as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == world["ann"])) == "active"


def test_a_tampered_preferences_link_is_a_404_page(client, settings, world):
    path = path_of(preferences_url(settings, world["ann"]), settings)
    assert client.get(path + "x").status_code == 404
    assert client.get(path_of(unsubscribe_url(settings, 1, world["ann"]), settings).replace("/u/", "/p/")).status_code == 404
