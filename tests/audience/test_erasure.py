"""Erasure: nothing personal is left but a hash that keeps the address from being mailed again."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from sqlalchemy import select

from newsletter.audience import erasure
from newsletter.feedback import events
from newsletter.sending import scheduling
from newsletter.errors import InputError
from newsletter.store.models import Delivery, Membership, ProviderEvent, Subscriber, Suppression, utcnow
from newsletter.audience.csv_import import import_csv
from newsletter.audience.subscribers import add_subscriber
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send

ADDRESS = "reader001@example.com"


@pytest.fixture
def fast(settings):
    return replace(settings, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=50)


@pytest.fixture
def world(session, fast):
    _, lst, issue = make_world(session, 3)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=50)
    session.commit()
    run_send(session, fast, MemoryTransport(), send.id)
    events.record_events(session, fast, [events.Event(
        source="test", key="b1", kind="bounced", bounce="soft", email=ADDRESS, occurred_at=utcnow(),
        detail=f"452 mailbox of {ADDRESS} full", raw=f'{{"email": "{ADDRESS}"}}')])
    session.commit()
    return lst, issue


def everything_stored(session) -> str:
    rows = []
    for model in (Subscriber, Membership, Delivery, ProviderEvent, Suppression):
        rows += [repr([getattr(r, c.name) for c in model.__table__.columns]) for r in session.scalars(select(model))]
    return "\n".join(rows)


def test_erasure_leaves_only_a_hash_of_the_address(session, world):
    report = erasure.erase_subscriber(session, ADDRESS)
    session.commit()

    assert report.subscriber_deleted and report.memberships_deleted == 1
    assert report.ledger_rows_anonymised == 1 and report.events_anonymised == 1
    stored = everything_stored(session)
    assert ADDRESS not in stored and "Reader 1" not in stored
    digest = hashlib.sha256(ADDRESS.encode()).hexdigest()
    assert session.scalars(select(Suppression.email)).all() == [f"sha256:{digest}"]
    assert session.scalar(select(Subscriber.id).where(Subscriber.email == "reader002@example.com"))


def test_an_erased_address_cannot_be_added_or_imported_again(session, world, tmp_path):
    lst, _ = world
    erasure.erase_subscriber(session, ADDRESS)
    session.commit()

    with pytest.raises(InputError, match="suppression list"):
        add_subscriber(session, ADDRESS, lists=[lst])
    csv = tmp_path / "people.csv"
    csv.write_text(f"email,name\n{ADDRESS},Someone\nnew@example.com,New\n")
    report = import_csv(session, csv, [lst.slug])
    session.commit()

    assert report.not_resubscribed == 1
    emails = set(session.scalars(select(Subscriber.email)))
    assert ADDRESS not in emails and "new@example.com" in emails


def test_a_later_event_for_an_erased_address_does_not_bring_it_back(session, world, fast):
    erasure.erase_subscriber(session, ADDRESS)
    events.record_events(session, fast, [events.Event(
        source="test", key="c1", kind="complained", email=ADDRESS, occurred_at=utcnow())])
    session.commit()

    assert ADDRESS not in everything_stored(session)
    assert len(session.scalars(select(Suppression)).all()) == 1


def test_erasing_twice_is_harmless_and_a_previous_suppression_reason_is_noted(session, world, fast):
    events.suppress_manually(session, ADDRESS)
    erasure.erase_subscriber(session, ADDRESS)
    again = erasure.erase_subscriber(session, ADDRESS)

    assert not again.subscriber_deleted
    (row,) = session.scalars(select(Suppression)).all()
    assert (row.reason, row.source) == ("erased", "erased on request (was suppressed: manual)")
    with pytest.raises(InputError, match="erased"):
        events.remove_suppression(session, ADDRESS)


def test_erasure_takes_the_address_out_of_the_audit_log_word_for_word(session, world):
    from newsletter.accounts import audit
    from newsletter.store.models import AuditEntry

    for detail in (f"{ADDRESS.upper()}: asked by phone", "xreader001@example.com: someone else",
                   "reader001@example.com.au: someone else too", f"removed {ADDRESS} (was: manual)"):
        audit.record(session, "cli", "note", detail)
    session.commit()
    counted = erasure.what_erasure_removes(session, ADDRESS)
    assert session.scalar(select(Subscriber.id).where(Subscriber.email == ADDRESS)) is not None  # counting changed nothing
    report = erasure.erase_subscriber(session, ADDRESS)
    session.commit()
    assert counted == report and report.audit_entries_anonymised == 2
    assert sorted(session.scalars(select(AuditEntry.detail))) == [
        "(an erased address): asked by phone", "reader001@example.com.au: someone else too",
        "removed (an erased address) (was: manual)", "xreader001@example.com: someone else"]


def test_ledger_rows_of_an_address_outside_ascii_are_found_in_any_case_once_the_subscriber_is_gone(session, world):
    """Rows whose subscriber was deleted earlier are found by the address alone,
    in another case (through the index on lower(email))."""
    from sqlalchemy import update

    [row] = session.scalars(select(Delivery).where(Delivery.email == "reader002@example.com")).all()
    session.execute(update(Delivery).where(Delivery.id == row.id).values(email="ñandú@Example.COM", subscriber_id=None))
    session.commit()

    report = erasure.erase_subscriber(session, "Ñandú@example.com")
    session.commit()

    assert report.ledger_rows_anonymised == 1
    assert session.get(Delivery, row.id).email == erasure.ERASED_ADDRESS
