"""One person, one copy: a subscriber is the address whatever its case, on every way in."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from newsletter.audience import csv_import, erasure, signup
from newsletter.feedback import events
from newsletter.sending import scheduling
from newsletter.audience import subscribers as subs
from newsletter.addresses import address_key
from newsletter.errors import InputError
from newsletter.store.db import engine_for, session_scope
from newsletter.store.migrate import alembic_config, upgrade
from newsletter.store.models import (
    Delivery,
    IssueRow,
    MailingList,
    Membership,
    ProviderEvent,
    Subscriber,
    SubscriberMerge,
)
from newsletter.audience.suppressions import is_suppressed
from newsletter.transports.smtp import SmtpTransport
from newsletter.feedback.events import Event
from tests.memory_transport import MemoryTransport
from tests.smtp_server import smtp_server  # noqa: F401  (a fixture)
from tests.sending.world import HTML, TEXT, make_world, run_send, states


@pytest.mark.parametrize("typed, key", [
    ("Someone@EXAMPLE.org", "someone@example.org"),
    ("SOMEONE@example.org", "someone@example.org"),
    ("x@BÜCHER.example", "x@bücher.example"),
    ("x@xn--bcher-kva.example", "x@bücher.example"),
    ("X@XN--BCHER-KVA.EXAMPLE", "x@bücher.example"),
    ("Ünï@bücher.example", "ünï@bücher.example"),
    ("sha256:" + "ab" * 32, "sha256:" + "ab" * 32),
])
def test_the_key_ignores_case_and_the_form_of_the_domain(typed, key):
    assert address_key(typed) == key


@pytest.fixture
def gazette(session):
    pub, lst, issue = make_world(session, 0)
    return pub, lst, issue


def test_adding_another_spelling_finds_the_same_person_and_keeps_the_first_spelling(session, gazette):
    first = subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"], {"team": "Finance"})
    again = subs.add_subscriber(session, "SOMEONE@EXAMPLE.ORG", "", ["all"], {"site": "North"})

    assert again.id == first.id
    assert session.scalar(select(sa.func.count()).select_from(Subscriber)) == 1
    assert again.email == "Someone@example.org"  # shown and sent to as first typed
    assert again.attributes == {"team": "Finance", "site": "North"}
    assert subs.get_subscriber(session, "someone@example.org").id == first.id


def test_import_finds_the_person_whatever_the_case(session, gazette, tmp_path):
    subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"])
    path = tmp_path / "people.csv"
    path.write_text("email,name,team\nsomeone@EXAMPLE.org,,Comms\nnew@example.org,New,\n", encoding="utf-8")

    report = csv_import.import_csv(session, path, ["all"])

    assert (report.added, report.updated, report.rejected) == (1, 1, 0)
    person = subs.get_subscriber(session, "SOMEONE@example.org")
    assert (person.email, person.attributes) == ("Someone@example.org", {"team": "Comms"})


def test_import_does_not_bring_back_another_spelling_of_someone_who_left(session, gazette, tmp_path):
    subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"])
    subs.unsubscribe(session, "Someone@example.org")
    path = tmp_path / "people.csv"
    path.write_text("email\nsomeone@example.org\n", encoding="utf-8")

    report = csv_import.import_csv(session, path, ["all"])

    assert (report.added, report.not_resubscribed) == (0, 1)
    with pytest.raises(InputError, match="unsubscribed"):
        subs.add_subscriber(session, "SOMEONE@example.org", "", ["all"])


def test_sign_up_with_another_spelling_joins_the_same_person(session, settings, gazette):
    pub, lst, _ = gazette
    subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"])
    session.add(MailingList(publication_id=pub.id, slug="events", name="Events", description=""))
    session.commit()

    signup.request_subscription(session, settings, pub.slug, "events", "someone@example.ORG", "Impostor",
                                transport=MemoryTransport())

    people = session.scalars(select(Subscriber)).all()
    assert [(p.email, p.name) for p in people] == [("Someone@example.org", "Someone")]
    assert {slug for slug, _ in subs.memberships_of(session, [people[0].id])[people[0].id]} == {"all", "events"}


def _event(kind, email, key, bounce=""):
    return Event(source="test", key=key, kind=kind, email=email, bounce=bounce,
                 occurred_at=datetime.now(timezone.utc), detail="", raw="")


def test_webhook_events_find_the_subscriber_whatever_the_case(session, settings, gazette):
    subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"])
    subs.add_subscriber(session, "Other@example.org", "Other", ["all"])

    events.record_events(session, settings, [
        _event("unsubscribed", "SOMEONE@EXAMPLE.ORG", "1"),
        _event("complained", "other@example.org", "2"),
    ])

    assert subs.get_subscriber(session, "someone@example.org").status == "unsubscribed"
    assert is_suppressed(session, "Other@example.org")


def test_erasing_another_spelling_erases_the_person_and_every_spelling_in_the_ledger(session, fast):
    _, lst, issue = make_world(session, 2)
    subs.add_subscriber(session, "Someone@example.org", "Someone", [lst])
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    run_send(session, fast, MemoryTransport(), send.id)
    # A provider reported it in another case; the event keeps what was sent to.
    events.record_events(session, fast, [_event("delivered", "someone@example.org", "d1")])

    report = erasure.erase_subscriber(session, "SOMEONE@EXAMPLE.ORG")

    assert report.subscriber_deleted and report.ledger_rows_anonymised == 1
    assert subs.find_subscriber(session, "someone@example.org") is None
    assert "Someone@example.org" not in session.scalars(select(Delivery.email)).all()
    assert not [e for e in session.scalars(select(ProviderEvent.email)) if "@" in e and address_key(e) == "someone@example.org"]
    assert is_suppressed(session, "someone@example.org")


# --- migration 0008: the duplicates that exist already ----------------------------------


def _insert(connection, table: str, **values) -> int:
    """A row written with the 0007 schema (the models describe the new one)."""
    def kind(value):
        if isinstance(value, datetime):
            return sa.DateTime(timezone=True)
        if isinstance(value, dict):
            return sa.JSON()
        if isinstance(value, date):
            return sa.Date()
        return None

    columns = [sa.column(name, kind(value)) for name, value in values.items()]
    rows = sa.table(table, sa.column("id"), *columns)
    return connection.execute(sa.insert(rows).values(**values).returning(rows.c.id)).scalar_one()


def day(month, d=1):
    return datetime(2024, month, d, tzinfo=timezone.utc)


def old_database(url: str) -> dict:
    """A database at 0007 where one person is three subscribers, and another two."""
    ids = {}
    with engine_for(url).begin() as c:
        command.upgrade(alembic_config(url, c), "0007")
        pub = _insert(c, "publications", slug="gazette", name="The Gazette", from_name="The Gazette",
                      from_email="news@gazette.example.org", reply_to="editor@gazette.example.org",
                      postal_address="1 High Street", web_base_url="https://gazette.example.org/",
                      timezone="Europe/London", language="en-GB", settings={}, created_at=day(1))
        ids["all"] = _insert(c, "lists", publication_id=pub, slug="all", name="Everyone", description="", created_at=day(1))
        ids["staff"] = _insert(c, "lists", publication_id=pub, slug="staff", name="Staff", description="", created_at=day(1))

        def person(email, created, updated, name, attributes, status="active", lists=()):
            sid = _insert(c, "subscribers", email=email, name=name, status=status, attributes=attributes,
                          source="import", created_at=created, updated_at=updated)
            for slug, membership in lists:
                _insert(c, "memberships", list_id=ids[slug], subscriber_id=sid, status=membership,
                        created_at=created, updated_at=updated)
            return sid

        ids["Someone"] = person("Someone@example.org", day(1), day(1, 2), "Someone", {"team": "Finance", "site": "North"},
                                lists=[("all", "confirmed"), ("staff", "unconfirmed")])
        ids["SOMEONE"] = person("SOMEONE@example.org", day(2), day(2), "Some One", {}, status="unsubscribed",
                                lists=[("all", "unsubscribed")])
        ids["someone"] = person("someone@example.org", day(3), day(6), "", {"team": "Comms"},
                                lists=[("staff", "confirmed")])
        ids["reader"] = person("reader@example.org", day(4), day(4), "Reader", {}, lists=[("all", "confirmed")])
        ids["Reader"] = person("Reader@example.org", day(5), day(5), "", {}, lists=[("all", "confirmed")])
        ids["plain"] = person("plain@example.org", day(5), day(5), "Plain", {}, lists=[("all", "confirmed")])
        issue = _insert(c, "issues", publication_id=pub, slug="2024-01", title="January", subject="January",
                        preheader="", issue_date=date(2024, 1, 1), html=HTML, text=TEXT, mjml="", web_html="",
                        articles={}, content_hash="x", source_folder="", built_at=day(6))
        old_send = _insert(c, "sends", issue_id=issue, list_id=ids["all"], state="finished", scheduled_at=day(6),
                           audience_size=2, batch_size=200, paused_reason="", created_at=day(6), updated_at=day(6))
        for who in ("reader", "Reader"):  # the same person, mailed twice before this release
            _insert(c, "deliveries", send_id=old_send, subscriber_id=ids[who], email=who + "@example.org", state="sent",
                    attempts=1, last_error="", message_id="", provider_message_id="", claimed_by="",
                    possible_duplicate=False, updated_at=day(6))
        _insert(c, "confirmation_emails", subscriber_id=ids["someone"], last_sent_at=day(3), emails_sent=2)
        _insert(c, "confirmation_emails", subscriber_id=ids["SOMEONE"], last_sent_at=day(2), emails_sent=1)
        ids["issue"], ids["old_send"] = issue, old_send
    return ids


def test_the_migration_merges_duplicate_subscribers_and_keeps_their_history(database_url, capsys):
    ids = old_database(database_url)

    upgrade(database_url)

    printed = capsys.readouterr().out
    assert f"SOMEONE@example.org (id {ids['SOMEONE']})" in printed and f"into Someone@example.org (id {ids['Someone']})" in printed
    assert f"into reader@example.org (id {ids['reader']})" in printed
    with session_scope_for(database_url) as session:
        people = {p.email: p for p in session.scalars(select(Subscriber))}
        assert set(people) == {"Someone@example.org", "reader@example.org", "plain@example.org"}
        merged = people["Someone@example.org"]
        assert merged.id == ids["Someone"]  # the earliest join
        assert merged.created_at == day(1)
        assert merged.status == "unsubscribed"  # the strongest status
        assert merged.name == "Some One"  # the newest name given
        assert merged.attributes == {"team": "Comms", "site": "North"}  # union, newest value wins
        assert dict(session.execute(
            select(MailingList.slug, Membership.status).join(MailingList).where(Membership.subscriber_id == merged.id)
        ).all()) == {"all": "unsubscribed", "staff": "confirmed"}
        # No history lost: both ledger rows of the old send are there, one on the kept subscriber.
        ledger = session.execute(
            select(Delivery.email, Delivery.subscriber_id).where(Delivery.send_id == ids["old_send"]).order_by(Delivery.id)
        ).all()
        assert [tuple(row) for row in ledger] == [("reader@example.org", ids["reader"]), ("Reader@example.org", None)]
        # Links already sent with a merged id still find the person.
        assert subs.subscriber_by_id(session, ids["Reader"]).id == ids["reader"]
        assert subs.subscriber_by_id(session, ids["someone"]).id == ids["Someone"]
        assert session.scalar(select(sa.func.count()).select_from(SubscriberMerge)) == 3


def session_scope_for(url):
    from dataclasses import replace

    from newsletter.config import settings_from

    return session_scope(replace(settings_from({}), database_url=url))


def test_after_the_migration_a_list_holding_both_spellings_is_mailed_once(database_url, smtp_server, tmp_path):  # noqa: F811
    ids = old_database(database_url)
    upgrade(database_url)
    from dataclasses import replace

    from newsletter.config import settings_from

    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=database_url,
                       secret_keys=("test-secret-key",), base_url="https://newsletter.example.org",
                       retry_base_delay_seconds=0.0)
    transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none", connections=1)
    with session_scope(settings) as session:
        issue = session.get(IssueRow, ids["issue"])
        # The old send already mailed this issue to reader@: only a resend goes to them again.
        send = scheduling.schedule_send(session, issue, session.get(MailingList, ids["all"]), None, resend=True)
        session.commit()
        try:
            run_send(session, settings, transport, send.id)
        finally:
            transport.close()
        assert states(session, send.id) == {"sent": 2}

    received = sorted(r for m in smtp_server.messages for r in m.recipients)
    # reader@ and Reader@ are one person: one copy. Someone@ left (one of their spellings unsubscribed).
    assert received == ["plain@example.org", "reader@example.org"]


def test_soft_bounces_reported_in_different_cases_count_for_one_person(session, settings, gazette):
    subs.add_subscriber(session, "Someone@example.org", "Someone", ["all"])
    spellings = ["someone@example.org", "SOMEONE@EXAMPLE.ORG", "Someone@Example.org"]
    bounces = [
        Event(source="test", key=f"b{n}", kind="bounced", bounce="soft", email=spellings[n % len(spellings)],
              provider_message_id=f"message-{n}", occurred_at=datetime.now(timezone.utc))
        for n in range(settings.soft_bounce_threshold)
    ]

    events.record_events(session, settings, bounces[:-1])
    assert not is_suppressed(session, "Someone@example.org")
    events.record_events(session, settings, bounces[-1:])

    assert is_suppressed(session, "Someone@example.org")
    assert set(session.scalars(select(ProviderEvent.email))) == {"Someone@example.org"}
