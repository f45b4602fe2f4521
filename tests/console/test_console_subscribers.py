"""Subscribers and the suppression list in the comms console (Flask's test client):
finding people, one person's page and history, acting on their lists, erasing,
the suppression list, and which role may do what."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from newsletter.audience.subscribers import add_subscriber, create_list, unsubscribe
from newsletter.audience.suppressions import hashed_address
from newsletter.feedback.events import Event, record_events
from newsletter.accounts import admins
from newsletter.store.db import session_scope
from newsletter.store.models import (
    AuditEntry, Delivery, Membership, ProviderEvent, Subscriber, Suppression, utcnow,
)
from newsletter.web import create_app
from tests.passwords import quick_hashes
from tests.console_world import ADMIN, APPROVER, EDITOR, OPERATOR, PASSWORD, client_of, make_world, post, sample_zip, upload

OUTSIDER = "outsider@example.org"  # an editor of another publication only
ADA = "Ada.Lovelace@example.org"


@pytest.fixture
def world(settings, publication_row):
    world = make_world(settings, subscribers=3)
    with session_scope(settings) as session, quick_hashes():
        create_list(session, world.slug, "staff", "Staff news")
        add_subscriber(session, ADA, "Ada Lovelace", ["everyone"], {"organisation": "Analytical Engines"},
                       publication_slug=world.slug, source="import")
        other = publication_row(session, slug="other", name="Other Times", from_name="Other",
                                from_email="news@other.example", reply_to="news@other.example",
                                postal_address="1 Other Street", web_base_url="https://other.example")
        create_list(session, "other", "readers", "Other readers")
        add_subscriber(session, "stranger@example.net", "Sam Stranger", ["readers"], publication_slug="other")
        account = admins.invite_account(session, OUTSIDER, other.id, ["editor"])
        admins.set_password(session, account, PASSWORD)
    return world


def subscriber_id(settings, email: str) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(Subscriber.id).where(Subscriber.email_key == email.lower()))


def list_id(settings, slug: str) -> int:
    from newsletter.store.models import MailingList

    with session_scope(settings) as session:
        return session.scalar(select(MailingList.id).where(MailingList.slug == slug))


def memberships(settings, email: str) -> dict[str, str]:
    from newsletter.store.models import MailingList

    with session_scope(settings) as session:
        rows = session.execute(select(MailingList.slug, Membership.status).join(Membership)
                               .join(Subscriber).where(Subscriber.email_key == email.lower()))
        return dict(rows.all())


def audit_entries(settings, action: str) -> list[AuditEntry]:
    with session_scope(settings) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def text_of(response) -> str:
    """The page's text, tags dropped and spaces collapsed: what a reader sees."""
    html = response.get_data(as_text=True)
    html = re.sub(r"(?s)<style.*?</style>", " ", html)
    html = re.sub(r"</?(span|a|strong|code|em)\b[^>]*>", "", html)  # inline: no space of their own
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#39;", "'").replace("&amp;", "&").split())


def search_path(world, **query) -> str:
    from urllib.parse import urlencode

    return f"/console/publications/{world.slug}/subscribers" + (f"?{urlencode(query)}" if query else "")


def person_path(world, settings, email: str) -> str:
    return f"{search_path(world)}/{subscriber_id(settings, email)}"


# --- finding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["lovelace", "ADA LOVE", "ada.lovelace@example.ORG", "@EXAMPLE.org", "ada"])
def test_search_finds_a_subscriber_by_part_of_the_address_or_name_in_any_case(world, app, typed):
    page = text_of(client_of(app, EDITOR).get(search_path(world, q=typed)))
    assert "Ada.Lovelace@example.org Ada Lovelace active Everyone (confirmed)" in page
    assert "stranger@example.net" not in page  # another publication's subscriber


def test_a_search_that_matches_nobody_says_what_to_try(world, app):
    page = text_of(client_of(app, EDITOR).get(search_path(world, q="babbage")))
    assert "Nobody matches “babbage”" in page
    assert "Check the spelling, try a shorter part" in page and "show everyone" in page


def test_a_publication_without_subscribers_says_how_people_get_there(settings):
    world = make_world(settings, subscribers=0)
    client = client_of(create_app(settings), EDITOR)
    assert client.get("/console/subscribers").headers["Location"] == search_path(world)  # the only publication
    page = text_of(client.get(search_path(world)))
    assert "Nobody is on Together We're Better’s lists yet" in page
    assert "newsletter subscribers import FILE.csv" in page


def test_an_account_in_several_publications_chooses_whose_subscribers(world, app):
    page = client_of(app, ADMIN).get("/console/subscribers")
    assert page.status_code == 200 and "Whose subscribers?" in text_of(page)
    html = page.get_data(as_text=True)
    assert f'href="{search_path(world)}">Together We&#39;re Better</a>' in html
    assert 'href="/console/publications/other/subscribers">Other Times</a>' in html


def test_pages_of_subscribers_follow_on_by_id_without_repeating_anyone(world, app):
    with session_scope(world.settings) as session:
        for n in range(3, 75):
            add_subscriber(session, f"reader{n:03d}@example.com", lists=["everyone"], publication_slug=world.slug)
    client = client_of(app, EDITOR)
    seen, path, pages = [], search_path(world, q="reader"), 0
    statements = []
    record = lambda conn, cursor, statement, parameters, *rest: statements.append((statement, parameters))  # noqa: E731
    event.listen(Engine, "before_cursor_execute", record)
    while path:
        html = client.get(path).get_data(as_text=True)
        seen += re.findall(r'data-subscriber="(\d+)"', html)
        following = re.search(r'href="([^"]*after=(\d+)[^"]*)">Next', html)
        path = following.group(1).replace("&amp;", "&") if following else None
        if following:
            assert following.group(2) == seen[-1]  # keyset: the next page starts after the last id shown
        pages += 1
    event.remove(Engine, "before_cursor_execute", record)
    searches = [(q, p) for q, p in statements if "FROM subscribers" in q and "LIMIT" in q]
    # No page counts the rows before it (SQLite's dialect writes OFFSET 0 with every LIMIT).
    assert len(searches) == 2 and all("OFFSET" not in q or p[-1] == 0 for q, p in searches)
    assert "subscribers.id >" in searches[1][0]
    assert pages == 2 and len(seen) == 75 and len(set(seen)) == 75
    assert seen == sorted(seen, key=int)


# --- one subscriber ----------------------------------------------------------------------------------


def deliver_the_sample_issue(world, app) -> None:
    """Upload, approve and send the sample issue to 'everyone', delivered in-process."""
    from newsletter.sending.delivery import Deliverer
    from newsletter.sending.lifecycle import claim_due_sends, finish_sends
    from newsletter.store.models import Batch, Draft
    from tests.memory_transport import MemoryTransport

    editor, approver = client_of(app, EDITOR), client_of(app, APPROVER)
    upload(editor, sample_zip(), publication_id=world.publication_id)
    with session_scope(world.settings) as session:
        page = f"/console/issues/{session.scalars(select(Draft.id)).one()}"
    post(editor, f"{page}/submit", page=page)
    post(approver, f"{page}/approve", page=page)
    post(editor, f"{page}/schedule", {"lists": "everyone", "when": "now"}, page=page)
    transport = MemoryTransport()
    with session_scope(world.settings) as session:
        claim_due_sends(session, world.settings)
    with session_scope(world.settings) as session:
        deliverer = Deliverer(world.settings, transport)
        for batch_id in session.scalars(select(Batch.id)).all():
            deliverer.deliver_batch(session, batch_id)
    with session_scope(world.settings) as session:
        finish_sends(session)


def test_one_subscribers_page_shows_lists_fields_and_their_history(world, app):
    deliver_the_sample_issue(world, app)
    with session_scope(world.settings) as session:
        delivery = session.scalars(select(Delivery).where(Delivery.email == ADA)).one()
        now = utcnow()
        record_events(session, world.settings, [
            Event("mailbox", "b1", "bounced", ADA, now + timedelta(minutes=1), bounce="soft", delivery_id=delivery.id,
                  detail="mailbox full"),
            Event("ses", "c1", "complained", ADA, now + timedelta(minutes=2), delivery_id=delivery.id),
        ])
        unsubscribe(session, ADA, "everyone", publication_slug=world.slug)
    page = text_of(client_of(app, EDITOR).get(person_path(world, world.settings, ADA)))
    assert "Address Ada.Lovelace@example.org" in page and "organisation Analytical Engines" in page
    assert "Everyone unsubscribed" in page
    assert "Suppressed Never mailed: they complained (spam report)" in page
    history = page.split("History, newest first")[1]
    expected = ["Suppressed: they complained (spam report)", "Complained (marked an email as spam) — reported by ses",
                "Bounced (soft) — reported by mailbox: mailbox full", "Unsubscribed from “Everyone”",
                "“Together We're Better", "Joined “Everyone”", "Became a subscriber — imported from a CSV file"]
    positions = [history.find(text) for text in expected]
    assert -1 not in positions, list(zip(expected, positions))
    assert "Complained" in history.split("Unsubscribed from")[0]  # newest first: the complaint came after the send
    assert "— sent" in history
    assert "stranger" not in page


def test_a_subscriber_of_another_publication_is_not_found_here(world, app):
    client = client_of(app, ADMIN)
    assert client.get(person_path(world, world.settings, "stranger@example.net")).status_code == 404
    assert client.get(f"{search_path(world)}/999999").status_code == 404


# --- acting on a subscriber ---------------------------------------------------------------------------


def test_add_to_a_list_remove_and_unsubscribe_each_change_the_lists_and_are_in_the_audit_log(world, app):
    client, page = client_of(app, EDITOR), person_path(world, world.settings, ADA)
    staff, everyone = list_id(world.settings, "staff"), list_id(world.settings, "everyone")

    response = post(client, f"{page}/add-to-list", {"list": staff}, page=page)
    assert response.status_code == 303 and "Added to “Staff news”." in text_of(client.get(page))
    assert memberships(world.settings, ADA) == {"everyone": "confirmed", "staff": "confirmed"}

    post(client, f"{page}/unsubscribe", {"list": staff}, page=page)
    assert memberships(world.settings, ADA) == {"everyone": "confirmed", "staff": "unsubscribed"}
    refused = post(client, f"{page}/add-to-list", {"list": staff}, page=page)
    assert refused.status_code == 400 and "only the person can join it again" in text_of(refused)

    post(client, f"{page}/remove-from-list", {"list": everyone}, page=page)
    assert memberships(world.settings, ADA) == {"staff": "unsubscribed"}
    assert post(client, f"{page}/unsubscribe", {"list": everyone}, page=page).status_code == 400  # not on it now
    post(client, f"{page}/unsubscribe", page=page)  # nothing left to leave
    assert "They were unsubscribed already" in text_of(client.get(page))

    ada = subscriber_id(world.settings, ADA)
    for action, detail in (("added to a list", "Staff news"), ("unsubscribed", "Staff news"),
                           ("removed from a list", "Everyone")):
        [entry] = audit_entries(world.settings, action)
        assert (entry.actor, entry.detail, entry.publication_id) == (EDITOR, f"subscriber {ada}: {detail}",
                                                                     world.publication_id)
    history = text_of(client.get(page)).split("History, newest first")[1]
    assert f"Removed from a list: Everyone — by {EDITOR}, in the console" in history


def test_removed_from_their_last_list_they_leave_the_publications_pages(world, app):
    client, page = client_of(app, EDITOR), person_path(world, world.settings, ADA)
    removed = post(client, f"{page}/remove-from-list", {"list": list_id(world.settings, "everyone")}, page=page)
    assert removed.headers["Location"] == search_path(world)
    assert "They are on none of Together We're Better’s lists now" in text_of(client.get(search_path(world)))
    assert client.get(page).status_code == 404 and memberships(world.settings, ADA) == {}


def test_another_publications_list_cannot_be_used_and_nothing_changes(world, app):
    client, page = client_of(app, ADMIN), person_path(world, world.settings, ADA)
    refused = post(client, f"{page}/add-to-list", {"list": list_id(world.settings, "readers")}, page=page)
    assert refused.status_code == 400 and "field list: that list is not one of this publication's" in text_of(refused)
    assert memberships(world.settings, ADA) == {"everyone": "confirmed"}


def test_erasing_asks_first_says_what_goes_and_then_does_what_the_cli_does(world, app, cli):
    deliver_the_sample_issue(world, app)
    admin = client_of(app, ADMIN)
    # A suppression added and removed by hand quotes the address in the audit log; another address stays.
    for address in (ADA, "bada.lovelace@example.org"):
        post(admin, "/console/suppressions", {"email": address, "reason": "asked by phone"}, page="/console/suppressions")
    page = person_path(world, world.settings, ADA)
    ada = subscriber_id(world.settings, ADA)

    confirm = text_of(admin.get(f"{page}/erase"))
    assert "Erase Ada.Lovelace@example.org?" in confirm and "cannot be undone" in confirm
    assert "1 list membership" in confirm and "1 record of emails sent" in confirm
    assert "audit log quotes it (1 entry)" in confirm
    assert subscriber_id(world.settings, ADA) == ada  # asking changed nothing

    done = post(admin, f"{page}/erase", page=f"{page}/erase")
    assert done.status_code == 303 and done.headers["Location"] == search_path(world)
    assert "is erased" in text_of(admin.get(search_path(world)))
    assert admin.get(page).status_code == 404

    # The CLI erases reader000 the same way: compare what each leaves behind.
    assert cli("subscribers", "erase", "reader000@example.com", "--yes").exit_code == 0
    with session_scope(world.settings) as session:
        for address in (ADA, "reader000@example.com"):
            assert session.scalar(select(func.count()).select_from(Subscriber)
                                  .where(Subscriber.email_key == address.lower())) == 0
            assert session.scalar(select(Suppression.reason).where(Suppression.email == hashed_address(address))) == "erased"
            assert session.scalar(select(Suppression.id).where(Suppression.email == address.lower())) is None
        ledger = sorted(session.scalars(select(Delivery.email)))
        assert ADA not in ledger and "reader000@example.com" not in ledger
        assert ledger.count("erased@erased.invalid") == 2
        details = " ".join(session.scalars(select(AuditEntry.detail)))
        assert "lovelace" not in details.replace("bada.lovelace@example.org", "")
        assert "bada.lovelace@example.org" in details  # only whole addresses are taken out
    [erased] = audit_entries(world.settings, "erased a subscriber")
    assert erased.detail.startswith(f"subscriber {ada}: 1 memberships deleted, 1 ledger rows")


def test_a_provider_event_for_an_erased_address_stays_anonymous_on_the_subscriber_pages(world, app):
    # (erasure anonymises events; the page of a later subscriber with the same id shows none of the old history)
    deliver_the_sample_issue(world, app)
    with session_scope(world.settings) as session:
        delivery = session.scalars(select(Delivery).where(Delivery.email == ADA)).one()
        record_events(session, world.settings, [Event("ses", "b9", "bounced", ADA, utcnow(), bounce="hard",
                                                      delivery_id=delivery.id)])
    admin, page = client_of(app, ADMIN), person_path(world, world.settings, ADA)
    post(admin, f"{page}/erase", page=f"{page}/erase")
    with session_scope(world.settings) as session:
        assert session.scalar(select(ProviderEvent.email)).startswith("sha256:")


# --- the suppression list -----------------------------------------------------------------------------


def test_adding_a_suppression_checks_the_address_like_an_import_and_needs_a_reason(world, app):
    client = client_of(app, EDITOR)
    bad = post(client, "/console/suppressions", {"email": "not an address", "reason": "x"}, page="/console/suppressions")
    page = text_of(bad)
    assert bad.status_code == 400 and "Nothing was added." in page
    assert "field email: 'not an address' is not an email address" in page
    assert 'value="not an address"' in bad.get_data(as_text=True)  # what was typed is kept
    no_reason = post(client, "/console/suppressions", {"email": "someone@example.org", "reason": "  "},
                     page="/console/suppressions")
    assert no_reason.status_code == 400 and "field reason: say why this address must not be mailed" in text_of(no_reason)
    with session_scope(world.settings) as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0

    added = post(client, "/console/suppressions", {"email": "Someone@Example.org", "reason": "asked by phone"},
                 page="/console/suppressions")
    assert added.status_code == 303
    assert "someone@example.org is on the suppression list" in text_of(client.get("/console/suppressions"))
    [entry] = audit_entries(world.settings, "added to the suppression list")
    assert (entry.actor, entry.detail) == (EDITOR, "someone@example.org: asked by phone")
    again = post(client, "/console/suppressions", {"email": "SOMEONE@example.org", "reason": "again"},
                 page="/console/suppressions")
    assert "was on the suppression list already: nothing changed" in text_of(client.get(again.headers["Location"]))


def suppress(settings, email: str, reason: str) -> int:
    from newsletter.audience.suppressions import add_suppression

    with session_scope(settings) as session:
        add_suppression(session, email, reason, "test")
        session.flush()
        return session.scalar(select(Suppression.id).where(Suppression.email == email.lower()))


def test_search_the_suppression_list_by_part_of_an_address_and_by_reason(world, app):
    suppress(world.settings, "gone@example.org", "hard_bounce")
    suppress(world.settings, "angry@example.org", "complaint")
    client = client_of(app, EDITOR)
    page = text_of(client.get("/console/suppressions?q=GONE"))
    assert "gone@example.org the address does not exist (hard bounce)" in page and "angry@" not in page
    page = text_of(client.get("/console/suppressions?reason=complaint"))
    assert "angry@example.org" in page and "gone@" not in page
    assert "No entry matches" in text_of(client.get("/console/suppressions?q=nobody"))


def test_removing_a_suppression_needs_a_reason_which_the_audit_log_keeps(world, app):
    gone = suppress(world.settings, "gone@example.org", "hard_bounce")
    client = client_of(app, OPERATOR)
    form = f"/console/suppressions/{gone}/remove"
    assert "Mail gone@example.org again?" in text_of(client.get(form))
    refused = post(client, form, {"reason": ""}, page=form)
    assert refused.status_code == 400 and "field reason" in text_of(refused)
    assert post(client, form, {"reason": "the mailbox works again"}, page=form).status_code == 303
    with session_scope(world.settings) as session:
        assert session.get(Suppression, gone) is None
    [entry] = audit_entries(world.settings, "removed from the suppression list")
    assert entry.actor == OPERATOR
    assert re.fullmatch(r"gone@example\.org \(was: the address does not exist \(hard bounce\), since \d{4}-\d\d-\d\d\): "
                        r"the mailbox works again", entry.detail)


def test_a_complaint_is_removed_only_by_an_admin_and_others_see_why(world, app):
    angry = suppress(world.settings, "angry@example.org", "complaint")
    editor = client_of(app, EDITOR)
    listing = text_of(editor.get("/console/suppressions"))
    assert "The person complained about our mail: only an admin may remove this entry." in listing
    form = f"/console/suppressions/{angry}/remove"
    assert editor.get(form).status_code == 403
    refused = post(editor, form, {"reason": "they said it was a mistake"}, page="/console/suppressions")
    assert refused.status_code == 403 and "only an admin may remove this entry" in text_of(refused)
    admin = client_of(app, ADMIN)
    assert post(admin, form, {"reason": "they said it was a mistake"}, page=form).status_code == 303
    with session_scope(world.settings) as session:
        assert session.get(Suppression, angry) is None


def test_an_erased_address_stays_suppressed(world, app):
    erased = suppress(world.settings, hashed_address("gone@example.org"), "erased")
    admin = client_of(app, ADMIN)
    assert "an erased address (kept as a fingerprint)" in text_of(admin.get("/console/suppressions"))
    refused = post(admin, f"/console/suppressions/{erased}/remove", {"reason": "x"}, page="/console/suppressions")
    assert refused.status_code == 409 and "An erased address stays suppressed for good." in text_of(refused)


# --- roles -----------------------------------------------------------------------------------------


ALLOWED, ADMIN_ONLY, NOT_HERE = "allowed", "admin only", "not here"
# What each action is open to: everyone with a role in the publication, only admins,
# or (suppression list) anyone with a role in any publication.
ACTIONS = [
    ("search subscribers", ALLOWED), ("read a subscriber", ALLOWED), ("add to a list", ALLOWED),
    ("unsubscribe", ALLOWED), ("remove from a list", ALLOWED), ("see the erase page", ADMIN_ONLY),
    ("see the suppression list", "any role"), ("add a suppression", "any role"),
    ("remove a manual suppression", "any role"), ("remove a complaint suppression", ADMIN_ONLY),
    ("erase", ADMIN_ONLY),
]
ROLE_OF = {EDITOR: "editor", APPROVER: "approver", OPERATOR: "operator", ADMIN: "admin", OUTSIDER: "outsider"}


def attempt(client, world, action: str, ids: dict):
    page = person_path(world, world.settings, ADA)
    if action == "search subscribers":
        return client.get(search_path(world, q="ada"))
    if action == "read a subscriber":
        return client.get(page)
    if action in ("add to a list", "unsubscribe", "remove from a list"):
        return post(client, f"{page}/{action.replace(' a ', '-').replace(' ', '-')}", {"list": ids["staff"]})
    if action == "see the erase page":
        return client.get(f"{page}/erase")
    if action == "erase":
        return post(client, f"{page}/erase")
    if action == "see the suppression list":
        return client.get("/console/suppressions")
    if action == "add a suppression":
        return post(client, "/console/suppressions", {"email": "new@example.org", "reason": "asked"})
    suppression = ids["manual"] if action == "remove a manual suppression" else ids["complaint"]
    return post(client, f"/console/suppressions/{suppression}/remove", {"reason": "checked"})


@pytest.mark.parametrize("account", [EDITOR, APPROVER, OPERATOR, ADMIN, OUTSIDER], ids=ROLE_OF.get)
def test_each_role_against_each_action(world, app, account):
    ids = {"staff": list_id(world.settings, "staff"),
           "manual": suppress(world.settings, "manual@example.org", "manual"),
           "complaint": suppress(world.settings, "angry@example.org", "complaint")}
    with session_scope(world.settings) as session:
        add_subscriber(session, ADA, lists=["staff"], publication_slug=world.slug)
    client, results = client_of(app, account), {}
    for action, open_to in ACTIONS:
        response = attempt(client, world, action, ids)
        results[action] = response.status_code
        if account == OUTSIDER:
            expected = (200, 303) if open_to == "any role" else (403,)
        elif account == ADMIN or open_to != ADMIN_ONLY:
            expected = (200, 303)
        else:
            expected = (403,)
        assert response.status_code in expected, (ROLE_OF[account], action, response.status_code, text_of(response)[:300])
        if response.status_code == 403:
            assert "Not for this account" in text_of(response)
    with session_scope(world.settings) as session:
        erased = session.scalar(select(Suppression.id).where(Suppression.email == hashed_address(ADA))) is not None
    assert erased == (account == ADMIN)
