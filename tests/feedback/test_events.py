"""Provider events: recorded once, applied in any order, suppressing for good."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.feedback import events
from newsletter.sending import scheduling
from newsletter.errors import InputError
from newsletter.feedback.events import BOUNCED, COMPLAINED, DELIVERED, HARD, SOFT, UNSUBSCRIBED, Event
from newsletter.store.models import Delivery, IssueRow, MailingList, Membership, ProviderEvent, Subscriber, Suppression, WebhookNonce, utcnow
from newsletter.audience.subscribers import add_subscriber
from newsletter.feedback.webhooks import remember_nonce
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send


@pytest.fixture
def fast(settings):
    return replace(settings, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=50, smtp_connections=1)


def sent_world(session, settings, count=5):
    """A finished send to reader000..; returns (list, send, {email: delivery})."""
    _, lst, issue = make_world(session, count)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=settings.batch_size)
    session.commit()
    run_send(session, settings, MemoryTransport(), send.id)
    rows = session.scalars(select(Delivery).where(Delivery.send_id == send.id)).all()
    return lst, send, {row.email: row for row in rows}


def event(kind, email, key, *, bounce="", message_id="", provider_message_id="", at=None, source="test"):
    return Event(source=source, key=key, kind=kind, bounce=bounce, email=email, occurred_at=at or utcnow(),
                 message_id=message_id, provider_message_id=provider_message_id, raw='{"payload": true}')


def suppression_of(session, email):
    return session.scalar(select(Suppression.reason).where(Suppression.email == email))


def test_a_hard_bounce_suppresses_at_once_and_a_later_delivery_does_not_undo_it(session, fast):
    _, _, rows = sent_world(session, fast)
    row = rows["reader001@example.com"]

    report = events.record_events(session, fast, [event(BOUNCED, "Reader001@EXAMPLE.com", "b1", bounce=HARD, message_id=row.message_id)])
    events.record_events(session, fast, [event(DELIVERED, "reader001@example.com", "d1", message_id=row.message_id)])
    session.commit()

    assert report.suppressed == ["reader001@example.com"]
    assert suppression_of(session, "reader001@example.com") == "hard_bounce"
    assert events.delivery_outcome(session, row.id) == BOUNCED
    assert suppression_of(session, "reader002@example.com") is None


def test_the_same_event_twice_is_recorded_once(session, fast):
    _, _, rows = sent_world(session, fast)
    row = rows["reader002@example.com"]
    twice = [event(COMPLAINED, row.email, "c1", message_id=row.message_id)] * 2

    report = events.record_events(session, fast, twice)

    assert (report.recorded, report.duplicates) == (1, 1)
    stored = session.scalars(select(ProviderEvent)).all()
    assert [(e.kind, e.delivery_id) for e in stored] == [(COMPLAINED, row.id)]
    assert suppression_of(session, row.email) == "complaint"


def test_events_out_of_order_end_in_the_worst_outcome(session, fast):
    _, _, rows = sent_world(session, fast)
    row = rows["reader003@example.com"]
    later, earlier = utcnow(), utcnow() - timedelta(hours=1)

    events.record_events(session, fast, [
        event(COMPLAINED, row.email, "c", message_id=row.message_id, at=earlier),
        event(DELIVERED, row.email, "d", message_id=row.message_id, at=later),
    ])

    assert events.delivery_outcome(session, row.id) == COMPLAINED
    assert suppression_of(session, row.email) == "complaint"


def test_soft_bounces_suppress_after_the_threshold_of_different_messages_in_the_window(session, fast):
    settings = replace(fast, soft_bounce_threshold=3, soft_bounce_window_days=30)
    address = "reader000@example.com"
    make_world(session, 1)
    old = utcnow() - timedelta(days=40)

    events.record_events(session, settings, [
        event(BOUNCED, address, "s-old", bounce=SOFT, provider_message_id="m-old", at=old),
        event(BOUNCED, address, "s1", bounce=SOFT, provider_message_id="m1"),
        event(BOUNCED, address, "s1-again", bounce=SOFT, provider_message_id="m1"),  # the same message
        event(BOUNCED, address, "s2", bounce=SOFT, provider_message_id="m2"),
    ])
    assert suppression_of(session, address) is None

    report = events.record_events(session, settings, [event(BOUNCED, address, "s3", bounce=SOFT, provider_message_id="m3")])
    assert report.suppressed == [address]
    assert suppression_of(session, address) == "soft_bounce"


def test_a_suppressed_address_is_left_out_of_the_next_send_and_cannot_be_added_again(session, fast):
    lst, first, rows = sent_world(session, fast)
    address = "reader004@example.com"
    events.record_events(session, fast, [event(COMPLAINED, address, "c4", message_id=rows[address].message_id)])
    session.commit()

    with pytest.raises(InputError, match="suppression list"):
        add_subscriber(session, address, lists=[lst])
    again = scheduling.schedule_send(session, session.get(IssueRow, first.issue_id), lst, None, batch_size=50, resend=True)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, again.id)
    assert sorted(transport.recipients()) == [f"reader{i:03d}@example.com" for i in range(4)]


def test_an_unsubscribe_event_leaves_only_the_list_the_message_came_from(session, fast):
    lst, _, rows = sent_world(session, fast)
    other = MailingList(publication_id=lst.publication_id, slug="events", name="Events")
    session.add(other)
    session.flush()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == "reader001@example.com"))
    session.add(Membership(list_id=other.id, subscriber_id=subscriber.id, status="confirmed"))
    session.flush()

    report = events.record_events(session, fast, [event(UNSUBSCRIBED, subscriber.email, "u1", message_id=rows[subscriber.email].message_id)])

    statuses = dict(session.execute(select(Membership.list_id, Membership.status).where(Membership.subscriber_id == subscriber.id)).all())
    assert statuses == {lst.id: "unsubscribed", other.id: "confirmed"}
    assert report.unsubscribed == [subscriber.email]


def test_events_are_tied_to_the_ledger_by_the_providers_message_id(session, fast):
    _, _, rows = sent_world(session, fast)
    row = rows["reader002@example.com"]
    session.execute(Delivery.__table__.update().where(Delivery.id == row.id).values(provider_message_id="prov-123"))

    events.record_events(session, fast, [event(DELIVERED, row.email, "d", provider_message_id="prov-123")])

    assert session.scalar(select(ProviderEvent.delivery_id)) == row.id


def test_a_message_id_that_is_not_the_rows_own_ties_nothing(session, fast):
    _, _, rows = sent_world(session, fast)
    row = rows["reader002@example.com"]
    forged = row.message_id.replace("@", ".ffffffff@")

    events.record_events(session, fast, [event(DELIVERED, row.email, "d", message_id=forged)])

    assert session.scalar(select(ProviderEvent.delivery_id)) is None


def test_purge_empties_old_payloads_and_forgets_old_nonces(session, fast):
    settings = replace(fast, raw_event_retention_days=30, webhook_max_age_seconds=3600)
    now = utcnow()
    events.record_events(session, settings, [event(DELIVERED, "old@example.com", "old")], now=now - timedelta(days=31))
    events.record_events(session, settings, [event(DELIVERED, "new@example.com", "new")], now=now)
    remember_nonce(session, "mailgun", "old-token", "f" * 64, now - timedelta(hours=3))
    remember_nonce(session, "mailgun", "new-token", "f" * 64, now)

    report = events.purge_old_payloads(session, settings, now)

    raw = dict(session.execute(select(ProviderEvent.email, ProviderEvent.raw)).all())
    assert raw == {"old@example.com": None, "new@example.com": '{"payload": true}'}
    # Each token is kept twice: alone, and with the fingerprint of the content it came with.
    assert sorted(session.scalars(select(WebhookNonce.nonce))) == ["new-token", "new-token:" + "f" * 64]
    assert (report.payloads_emptied, report.nonces_deleted) == (1, 2)
    assert events.purge_old_payloads(session, settings, now) == events.PurgeReport(0, 0)


def test_suppressions_by_hand(session):
    assert events.suppress_manually(session, "Someone@Example.COM", "asked by phone")
    assert not events.suppress_manually(session, "Someone@example.com")  # the domain is normalised
    assert not events.suppress_manually(session, "SOMEONE@example.com")  # and the list ignores the local part's case
    assert [s.email for s in events.list_suppressions(session, reason="manual")] == ["someone@example.com"]

    events.remove_suppression(session, "SomeOne@example.com")
    assert events.list_suppressions(session) == []
    with pytest.raises(InputError):
        events.suppress_manually(session, "not an address")
