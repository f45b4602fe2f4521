"""The suppression list matches an address whatever the case of its local part."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import select, text

from newsletter.sending import delivery, lifecycle, scheduling
from newsletter.audience import erasure
from newsletter.feedback import events
from newsletter.errors import InputError
from newsletter.store.db import engine_for
from newsletter.store.migrate import alembic_config, upgrade
from newsletter.store.models import Send, Subscriber, utcnow
from newsletter.audience.csv_import import import_csv
from newsletter.audience.subscribers import add_subscriber, find_subscriber
from newsletter.audience.suppressions import is_suppressed
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send, states

STORED = "reader001@example.com"  # as make_world stores the subscriber
SHOUTED = "Reader001@example.com"  # the same mailbox, as a provider or a person may write it


@pytest.fixture
def fast(settings):
    """Retries that come round at once, and no error budget to pause a send."""
    return replace(settings, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=7)


def complaint(session, settings, address: str, key: str = "c1") -> None:
    events.record_events(session, settings, [events.Event(
        source="test", key=key, kind="complained", email=address, occurred_at=utcnow())])
    session.commit()


def test_a_complaint_in_another_case_keeps_the_subscriber_out_of_the_next_send(session, fast):
    _, lst, issue = make_world(session, 5)
    complaint(session, fast, SHOUTED)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    run_send(session, fast, transport, send.id)

    assert STORED not in transport.recipients()
    assert len(transport.recipients()) == 4
    assert session.get(Send, send.id).audience_size == 4  # left out when the audience froze


def test_a_subscriber_stored_in_capitals_is_matched_by_the_lower_cased_entry(session, fast):
    _, lst, issue = make_world(session, 3)
    add_subscriber(session, "Shouty.Reader@example.com", lists=[lst])
    complaint(session, fast, "shouty.reader@example.com")
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    run_send(session, fast, transport, send.id)

    assert "Shouty.Reader@example.com" not in transport.recipients()
    assert session.get(Send, send.id).audience_size == 3
    assert states(session, send.id) == {"sent": 3}


def test_a_complaint_in_another_case_after_the_freeze_skips_the_frozen_recipient(session, fast):
    _, lst, issue = make_world(session, 5)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    batch_ids = lifecycle.claim_due_sends(session, fast)
    complaint(session, fast, SHOUTED)
    transport = MemoryTransport()

    for batch_id in batch_ids:
        delivery.Deliverer(fast, transport).deliver_batch(session, batch_id)
    run_send(session, fast, transport, send.id)

    assert STORED not in transport.recipients()
    assert states(session, send.id) == {"sent": 4, "skipped": 1}


def test_erasing_another_case_of_an_address_stops_mail_to_it(session, fast):
    _, lst, issue = make_world(session, 5)
    erasure.erase_subscriber(session, SHOUTED)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    run_send(session, fast, transport, send.id)

    # Another case of the address is the same person: they are erased, so not in the audience at all.
    assert STORED not in transport.recipients()
    assert states(session, send.id) == {"sent": 4}
    assert find_subscriber(session, STORED) is None


@pytest.mark.parametrize("suppressed, added", [("someone@example.org", "SOMEONE@example.org"),
                                               ("SOMEONE@example.org", "someone@example.org")])
def test_adding_or_importing_another_case_of_a_suppressed_address_is_refused(session, tmp_path, suppressed, added):
    _, lst, _ = make_world(session, 2)
    assert events.suppress_manually(session, suppressed, "asked by phone")

    with pytest.raises(InputError, match="suppression list"):
        add_subscriber(session, added, lists=[lst])
    report = import_csv(session, write_people(tmp_path, added), [lst.slug])
    session.commit()

    assert report.not_resubscribed == 1
    assert set(session.scalars(select(Subscriber.email))) == {"reader000@example.com", STORED, "new@example.org"}


def test_erasing_someone_keeps_every_case_of_the_address_from_coming_back(session, tmp_path):
    _, lst, _ = make_world(session, 1)
    erasure.erase_subscriber(session, "Someone@example.org")
    session.commit()

    for address in ("someone@example.org", "Someone@example.org", "SOMEONE@EXAMPLE.ORG"):
        with pytest.raises(InputError, match="suppression list"):
            add_subscriber(session, address, lists=[lst])
    report = import_csv(session, write_people(tmp_path, "someone@example.org"), [lst.slug])
    session.commit()

    assert report.not_resubscribed == 1
    assert "someone@example.org" not in set(session.scalars(select(Subscriber.email)))
    with pytest.raises(InputError, match="erased"):
        events.remove_suppression(session, "someone@example.org")


def test_an_erasure_hashed_before_the_rule_still_stops_the_address_as_it_was(session):
    # Older erasures hashed the normalised address without lower-casing it.
    legacy = "sha256:" + hashlib.sha256(b"Someone@example.org").hexdigest()
    session.execute(text("INSERT INTO suppressions (email, reason, source, created_at) "
                         "VALUES (:email, 'erased', 'erased on request', :now)"), {"email": legacy, "now": utcnow()})
    session.commit()

    assert is_suppressed(session, "Someone@example.org")
    assert erasure.is_erased(session, "Someone@example.org")
    with pytest.raises(InputError, match="suppression list"):
        add_subscriber(session, "Someone@example.org")


def test_a_hard_bounce_at_sending_time_suppresses_every_case_of_the_address(session, fast):
    _, lst, issue = make_world(session, 3)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.permanent = {STORED: (550, "5.1.1", "no such user")}

    run_send(session, fast, transport, send.id)

    assert is_suppressed(session, SHOUTED)


def test_retrying_failures_leaves_out_an_address_complained_in_another_case(session, fast):
    _, lst, issue = make_world(session, 3)
    settings = replace(fast, retry_attempts=1)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.temporary = {STORED: 99, "reader002@example.com": 99}
    run_send(session, settings, transport, send.id)
    assert states(session, send.id) == {"sent": 1, "failed": 2}

    complaint(session, fast, SHOUTED)

    assert scheduling.retry_failed(session, send.id) == 1  # reader002 only


def write_people(tmp_path, address: str):
    path = tmp_path / "people.csv"
    path.write_text(f"email,name\n{address},Someone\nnew@example.org,New\n")
    return path


# -- migration 0007 ----------------------------------------------------------

OLD_ROWS = [  # email, reason, created (day of January 2024)
    ("Someone@example.org", "manual", 10),
    ("someone@example.org", "complaint", 20),
    ("SOMEONE@example.org", "soft_bounce", 5),
    ("Other@example.org", "hard_bounce", 7),
    ("plain@example.org", "manual", 8),
    ("sha256:" + hashlib.sha256(b"Erased@example.org").hexdigest(), "erased", 9),
]


def test_the_migration_lower_cases_and_merges_existing_entries(tmp_path, database_url):
    with engine_for(database_url).begin() as connection:
        command.upgrade(alembic_config(database_url, connection), "0006")
        for email, reason, day in OLD_ROWS:
            connection.execute(
                text("INSERT INTO suppressions (email, reason, source, created_at) VALUES (:e, :r, :s, :c)"),
                {"e": email, "r": reason, "s": f"{reason} source", "c": datetime(2024, 1, day, tzinfo=timezone.utc)},
            )

    upgrade(database_url)

    with engine_for(database_url).connect() as connection:
        rows = connection.execute(text("SELECT email, reason, source, created_at FROM suppressions")).all()
    by_email = {row.email: row for row in rows}
    assert set(by_email) == {"someone@example.org", "other@example.org", "plain@example.org", OLD_ROWS[-1][0]}
    merged = by_email["someone@example.org"]
    # The earliest date, the strongest reason.
    assert (merged.reason, merged.source) == ("complaint", "complaint source")
    assert str(merged.created_at).startswith("2024-01-05")
    assert by_email["other@example.org"].reason == "hard_bounce"
