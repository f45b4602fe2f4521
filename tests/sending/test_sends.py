"""The ledger decides who is sent: none lost, none twice, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from newsletter.config import Settings
from newsletter.sending import delivery, lifecycle, scheduling
from newsletter.errors import InputError
from newsletter.store.db import session_scope
from newsletter.ops.sends import orphaned_claims
from newsletter.store.models import (
    Batch,
    ClaimLease,
    Delivery,
    IssueRow,
    Membership,
    Send,
    Subscriber,
    Suppression,
    utcnow,
)
from newsletter.transports.smtp import SmtpTransport
from tests.memory_transport import MemoryTransport
from tests.smtp_server import smtp_server  # noqa: F401 (a fixture)

from tests.sending.world import make_world, run_send, states


def test_every_subscriber_gets_the_issue_exactly_once(session, fast):
    _, lst, issue = make_world(session, 20)
    send = scheduling.schedule_send(session, issue, lst, utcnow() + timedelta(minutes=5), batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    assert lifecycle.tick(session, fast) == []  # not due yet
    run_send(session, fast, transport, send.id, now=utcnow() + timedelta(minutes=6))

    assert sorted(transport.recipients()) == [f"reader{i:03d}@example.com" for i in range(20)]
    assert session.get(Send, send.id).state == "finished"
    assert states(session, send.id) == {"sent": 20}
    messages = transport.parsed()
    assert len({m["Message-ID"] for m in messages}) == 20
    first = next(m for m in messages if m["To"].addresses[0].addr_spec == "reader003@example.com")
    text = first.get_body(("plain",)).get_content()
    assert "Hello Reader 3" in text
    assert "https://gazette.example.org/2026-12/" in text
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_audience_is_frozen_and_later_unsubscribes_are_honoured(session, fast):
    _, lst, issue = make_world(session, 10)
    session.add(Suppression(email="reader001@example.com", reason="complaint", source="test"))
    session.execute(update(Subscriber).where(Subscriber.email == "reader002@example.com").values(status="unsubscribed"))
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    batch_ids = lifecycle.claim_due_sends(session, fast)
    # After the freeze: a new subscriber is not added; an unsubscribe is honoured.
    late = Subscriber(email="late@example.com", name="Late", status="active", attributes={})
    session.add(late)
    session.flush()
    session.add(Membership(list_id=lst.id, subscriber_id=late.id, status="confirmed"))
    session.execute(
        update(Membership)
        .where(Membership.subscriber_id == select(Subscriber.id).where(Subscriber.email == "reader005@example.com").scalar_subquery())
        .values(status="unsubscribed")
    )
    session.commit()
    transport = MemoryTransport()
    for batch_id in batch_ids:
        delivery.Deliverer(fast, transport).deliver_batch(session, batch_id)
    run_send(session, fast, transport, send.id)

    got = set(transport.recipients())
    assert "late@example.com" not in got
    assert not {"reader001@example.com", "reader002@example.com", "reader005@example.com"} & got
    assert len(got) == 7
    assert states(session, send.id) == {"sent": 7, "skipped": 1}


@pytest.mark.parametrize("audience, batch_size", [(23, 7), (21, 7), (1, 7), (0, 7), (23, 1)])
def test_the_frozen_audience_is_cut_into_batches_that_cover_the_ledger_once(session, fast, monkeypatch, audience, batch_size):
    monkeypatch.setattr(lifecycle, "FREEZE_PAGE", 4)  # several keyset pages of the freeze
    _, lst, issue = make_world(session, 26)
    ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
    # Three people who should not get it: suppressed, unsubscribed, left the list.
    session.add(Suppression(email="reader000@example.com", reason="complaint", source="test"))
    session.execute(update(Subscriber).where(Subscriber.id == ids[1]).values(status="unsubscribed"))
    session.execute(update(Membership).where(Membership.subscriber_id == ids[2]).values(status="unsubscribed"))
    session.execute(update(Membership).where(Membership.subscriber_id.in_(ids[3 + audience:])).values(status="unsubscribed"))
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=batch_size)
    session.commit()

    batch_ids = lifecycle.claim_due_sends(session, fast)

    ledger = session.execute(select(Delivery.id, Delivery.subscriber_id).where(Delivery.send_id == send.id)
                             .order_by(Delivery.id)).all()
    assert [row.subscriber_id for row in ledger] == ids[3:3 + audience]  # each once, in subscriber order
    assert session.get(Send, send.id).audience_size == audience
    batches = session.scalars(select(Batch).where(Batch.send_id == send.id).order_by(Batch.id)).all()
    assert [b.id for b in batches] == batch_ids
    pages = [ledger[start:start + batch_size] for start in range(0, len(ledger), batch_size)]
    assert [(b.first_delivery_id, b.last_delivery_id, b.size) for b in batches] == [
        (page[0].id, page[-1].id, len(page)) for page in pages
    ]
    assert {(b.state, b.times_enqueued) for b in batches} <= {("queued", 1)}


def test_a_batch_delivered_twice_sends_nothing_twice(session, fast):
    _, lst, issue = make_world(session, 10)
    scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    batch_ids = lifecycle.tick(session, fast)
    transport = MemoryTransport()
    deliverer = delivery.Deliverer(fast, transport)
    for batch_id in batch_ids + batch_ids:
        deliverer.deliver_batch(session, batch_id)
    other = delivery.Deliverer(fast, transport, identity="elsewhere:1:abc")
    for batch_id in batch_ids:
        assert other.deliver_batch(session, batch_id).claimed == 0
    assert len(transport.recipients()) == 10 == len(set(transport.recipients()))


def test_two_ticks_start_a_send_once(settings, fast):
    with session_scope(fast) as session:
        _, lst, issue = make_world(session, 10)
        send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
        send_id = send.id
    now = utcnow()
    with session_scope(fast) as a, session_scope(fast) as b:
        first = lifecycle.claim_due_sends(a, fast, now)
        second = lifecycle.claim_due_sends(b, fast, now)
    assert len(first) == 2 and second == []
    with session_scope(fast) as session:
        assert session.scalar(select(func.count()).select_from(Delivery).where(Delivery.send_id == send_id)) == 10
        assert session.scalar(select(func.count()).select_from(Batch).where(Batch.send_id == send_id)) == 2


def test_temporary_failures_retry_only_the_failed_recipients(session, fast):
    _, lst, issue = make_world(session, 10)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.temporary = {"reader004@example.com": 2, "reader008@example.com": 1}
    run_send(session, fast, transport, send.id)

    got = transport.recipients()
    assert sorted(got) == sorted(set(got)) and len(got) == 10
    attempts = dict(session.execute(select(Delivery.email, Delivery.attempts).where(Delivery.send_id == send.id)).all())
    assert attempts["reader004@example.com"] == 3
    assert attempts["reader008@example.com"] == 2
    assert attempts["reader000@example.com"] == 1


def test_retries_give_up_after_the_configured_attempts(session, fast):
    _, lst, issue = make_world(session, 3)
    settings = replace(fast, retry_attempts=2)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.temporary = {"reader001@example.com": 99}
    run_send(session, settings, transport, send.id)
    row = session.scalars(select(Delivery).where(Delivery.email == "reader001@example.com")).one()
    assert row.state == "failed" and row.attempts == 2
    assert "gave up after 2 attempts" in row.last_error


def test_hard_bounce_fails_and_suppresses_the_address(session, fast):
    _, lst, issue = make_world(session, 5)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.permanent = {"reader002@example.com": (550, "5.1.1", "no such user")}
    run_send(session, fast, transport, send.id)
    assert states(session, send.id) == {"sent": 4, "failed": 1}
    suppression = session.scalars(select(Suppression).where(Suppression.email == "reader002@example.com")).one()
    assert suppression.reason == "hard_bounce"
    assert "5.1.1" in suppression.source


def test_rows_left_sending_by_a_dead_worker_are_resent_and_counted(session, fast):
    _, lst, issue = make_world(session, 10)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    batch_ids = lifecycle.tick(session, fast)
    # A worker on this host claimed the first batch, handed three rows to the
    # server, and was killed (its pid no longer exists).
    dead = f"{socket.gethostname()}:999999999:dead/1"
    batch = session.get(Batch, batch_ids[0])
    ids = list(range(batch.first_delivery_id, batch.last_delivery_id + 1))
    session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(state="claimed", claimed_by=dead, claimed_at=utcnow()))
    session.execute(update(Delivery).where(Delivery.id.in_(ids[:3])).values(state="sending"))
    session.commit()

    transport = MemoryTransport()
    deliverer = delivery.Deliverer(fast, transport)
    for batch_id in batch_ids:  # the task is redelivered
        deliverer.deliver_batch(session, batch_id)
    run_send(session, fast, transport, send.id)

    assert len(transport.recipients()) == 10
    progress = lifecycle.progress(session, send.id)
    assert progress.counts == {"sent": 10}
    assert progress.possible_duplicates == 3
    assert "3 possibly duplicated" in lifecycle.summary_line(progress)


def test_rows_of_a_worker_on_another_host_are_taken_over_once_its_lease_lapses(session, fast):
    _, lst, issue = make_world(session, 7)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    [batch_id] = lifecycle.tick(session, fast)
    # A run on another host claimed the batch and handed three rows to its server.
    holder, now = "otherhost:42:abcd1234/1", utcnow()
    expires = now + timedelta(seconds=fast.claim_lease_seconds)
    session.add(ClaimLease(holder=holder, hostname="otherhost", pid=42, batch_id=batch_id, taken_at=now, expires_at=expires))
    ids = session.scalars(select(Delivery.id).where(Delivery.send_id == send.id).order_by(Delivery.id)).all()
    session.execute(update(Delivery).where(Delivery.send_id == send.id).values(
        state="claimed", claimed_by=holder, claimed_at=now))
    session.execute(update(Delivery).where(Delivery.id.in_(ids[:3])).values(state="sending"))
    session.commit()
    transport = MemoryTransport()

    # While its lease is valid, its rows are its own: no one else claims them,
    # and the beat does not hand the batch out again.
    assert delivery.Deliverer(fast, transport).deliver_batch(session, batch_id).claimed == 0
    assert lifecycle.batches_to_requeue(session, fast, expires) == []
    assert orphaned_claims(session, send.id, expires) == 0

    # Its heartbeat stopped: one lease later the beat hands the batch out and
    # another worker takes the rows over, counting those in doubt.
    later = expires + timedelta(seconds=1)
    assert orphaned_claims(session, send.id, later) == 7
    assert lifecycle.batches_to_requeue(session, fast, later) == [batch_id]
    assert delivery.Deliverer(fast, transport).deliver_batch(session, batch_id, now=later).claimed == 7
    assert states(session, send.id) == {"sent": 7}
    assert lifecycle.progress(session, send.id).possible_duplicates == 3
    # With the default lease and beat, "one lease later" and the next tick come
    # well within the minute the operations guide promises for a lost host.
    defaults = Settings()
    assert fast.claim_lease_seconds == defaults.claim_lease_seconds
    assert (later - now).total_seconds() + defaults.beat_interval_seconds <= 60


def test_uncertain_outcome_is_retried_and_counted(session, fast):
    _, lst, issue = make_world(session, 4)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    transport.uncertain = {"reader001@example.com"}
    run_send(session, fast, transport, send.id)
    assert transport.recipients().count("reader001@example.com") == 2
    assert lifecycle.progress(session, send.id).possible_duplicates == 1


def test_pause_stops_within_the_batch_and_resume_finishes_without_repeats(session, fast):
    _, lst, issue = make_world(session, 30)
    settings = replace(fast, batch_size=30)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=30)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    transport = MemoryTransport()

    def pause_after_first_chunk(_chunk):
        if transport.calls == 1:
            with session_scope(settings) as other:
                scheduling.pause(other, send.id)

    transport.on_send = pause_after_first_chunk
    report = delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)
    assert report.stopped == "paused"
    sent_while_running = len(transport.recipients())
    assert 0 < sent_while_running < 30
    assert lifecycle.tick(session, settings) == []  # a paused send is left alone

    transport.on_send = None
    scheduling.resume(session, send.id)
    session.commit()
    delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)
    run_send(session, settings, transport, send.id)
    assert sorted(transport.recipients()) == sorted(set(transport.recipients()))
    assert len(transport.recipients()) == 30


def test_cancel_marks_the_rest_cancelled(session, fast):
    _, lst, issue = make_world(session, 14)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=7)
    session.commit()
    batch_ids = lifecycle.tick(session, fast)
    delivery.Deliverer(fast, MemoryTransport()).deliver_batch(session, batch_ids[0])
    scheduling.cancel(session, send.id)
    session.commit()
    transport = MemoryTransport()
    report = delivery.Deliverer(fast, transport).deliver_batch(session, batch_ids[1])
    assert report.stopped == "cancelled" and transport.recipients() == []
    assert states(session, send.id) == {"sent": 7, "cancelled": 7}


def test_error_budget_pauses_a_failing_send_with_the_reason(session, settings):
    _, lst, issue = make_world(session, 20)
    settings = replace(settings, error_budget_ratio=0.5, error_budget_minimum=10, batch_size=20)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=20)
    session.commit()
    transport = MemoryTransport()
    transport.permanent = {f"reader{i:03d}@example.com": (554, "5.7.1", "policy rejection") for i in range(15)}
    [batch_id] = lifecycle.tick(session, settings)
    delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)
    session.expire_all()
    paused = session.get(Send, send.id)
    assert paused.state == "paused"
    assert "15 of 20" in paused.paused_reason and "policy rejection" in paused.paused_reason


def test_schedule_in_the_past_is_refused(session):
    _, lst, issue = make_world(session, 1)
    with pytest.raises(InputError) as err:
        scheduling.schedule_send(session, issue, lst, utcnow() - timedelta(hours=1))
    assert "in the past" in str(err.value) and "--now" in str(err.value)
    assert session.scalar(select(func.count()).select_from(Send)) == 0


def test_a_message_that_cannot_be_built_fails_alone(session, fast):
    _, lst, issue = make_world(session, 5)
    # A name that would add a header if it were written into To:.
    session.execute(update(Subscriber).where(Subscriber.email == "reader002@example.com").values(name="Eve\r\nBcc: x@example.net"))
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, send.id)
    assert "reader002@example.com" not in transport.recipients() and len(transport.recipients()) == 4
    row = session.scalars(select(Delivery).where(Delivery.email == "reader002@example.com")).one()
    assert row.state == "failed" and "cannot build the message" in row.last_error
    assert all(b"Bcc" not in e.message for e in transport.accepted)


def test_a_provider_gets_chunks_of_its_own_batch_size(session, fast):
    _, lst, issue = make_world(session, 30)
    settings = replace(fast, batch_size=30)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=30)
    session.commit()
    chunks = []
    transport = MemoryTransport()
    transport.preferred_chunk = 12
    transport.on_send = lambda envelopes: chunks.append(len(envelopes))
    run_send(session, settings, transport, send.id)
    assert chunks == [12, 12, 6]


# --- claims are leases: a run sends and records only what it still holds --------------


def wait_until(predicate, what: str, timeout: float = 60.0):
    """Poll a condition with a generous deadline (never a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lease_of(settings, holder_prefix: str):
    with session_scope(settings) as other:
        return other.scalars(select(ClaimLease).where(ClaimLease.holder.startswith(holder_prefix))).one_or_none()


def test_a_stuck_run_loses_its_claim_and_neither_sends_nor_records_what_was_taken_over(session, fast):
    # A run is stuck in its first chunk (a server that stopped answering) for
    # longer than CLAIM_TIMEOUT_SECONDS; its lease lapses and another worker
    # takes the whole batch over. Then the stuck server answers after all.
    _, lst, issue = make_world(session, 30)
    settings = replace(fast, batch_size=30, claim_timeout_seconds=1, claim_lease_seconds=1)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=30)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    stuck, other = MemoryTransport(), MemoryTransport()
    taker_reports = []

    def stuck_server(_chunk):
        if stuck.calls != 1:
            return
        wait_until(lambda: lease_of(settings, "hosta:").expires_at < utcnow(), "the stuck run's lease to lapse")
        with session_scope(settings) as elsewhere:
            assert lifecycle.batches_to_requeue(elsewhere, settings) == [batch_id]
            taker = delivery.Deliverer(settings, other, identity="hostb:1:bbbbbbbb")
            taker_reports.append(taker.deliver_batch(elsewhere, batch_id))

    stuck.on_send = stuck_server
    report = delivery.Deliverer(settings, stuck, identity="hosta:1:aaaaaaaa").deliver_batch(session, batch_id)

    # The stuck run's first chunk (25 rows) reached its server; it recorded
    # none of it, and sent nothing of its second chunk.
    assert len(stuck.recipients()) == 25
    assert report.sent == 0 and report.taken_over == 25 and report.stopped == "claim lapsed"
    assert taker_reports[0].claimed == 30 and taker_reports[0].sent == 30
    session.expire_all()
    assert states(session, send.id) == {"sent": 30}
    flagged = set(session.scalars(
        select(Delivery.email).where(Delivery.send_id == send.id, Delivery.possible_duplicate.is_(True))).all())
    twice = {r for r in stuck.recipients() + other.recipients() if (stuck.recipients() + other.recipients()).count(r) > 1}
    assert twice and twice == flagged  # every duplicate is counted, and only those
    assert session.scalar(select(func.count()).select_from(ClaimLease)) == 0  # both runs dropped theirs


def test_a_slow_chunk_keeps_its_claim_while_its_run_is_alive(session, fast):
    _, lst, issue = make_world(session, 7)
    settings = replace(fast, claim_lease_seconds=1, claim_timeout_seconds=600)
    scheduling.schedule_send(session, issue, lst, None, batch_size=7)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    transport = MemoryTransport()
    seen = []

    def slow_server(_chunk):
        first = lease_of(settings, "hosta:").expires_at
        # The run is inside the transport; its heartbeat renews the lease.
        wait_until(lambda: lease_of(settings, "hosta:").expires_at > first + timedelta(seconds=1),
                   "the lease to be renewed while the chunk is out")
        renewed = lease_of(settings, "hosta:").expires_at
        with session_scope(settings) as elsewhere:
            # At any moment the lease is valid, no one else may claim the rows.
            moment = renewed - timedelta(seconds=0.5)
            seen.append(delivery.Deliverer(settings, MemoryTransport(), identity="hostb:1:bbbbbbbb")
                        .deliver_batch(elsewhere, batch_id, now=moment).claimed)

    transport.on_send = slow_server
    report = delivery.Deliverer(settings, transport, identity="hosta:1:aaaaaaaa").deliver_batch(session, batch_id)
    assert seen == [0]
    assert report.sent == 7 and report.taken_over == 0
    assert lease_of(settings, "hosta:") is None  # dropped when the run ended


class Broken(MemoryTransport):
    """A transport that raises in the middle of a chunk, after it went out."""

    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def send_many(self, envelopes):
        if self.calls == 0:
            self.calls += 1
            self.accepted += envelopes[:3]
            raise self.error
        return super().send_many(envelopes)


def test_a_run_that_raises_gives_its_rows_back_flags_the_doubtful_and_pauses_a_failure_that_would_repeat(session, fast):
    _, lst, issue = make_world(session, 30)
    settings = replace(fast, batch_size=30)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=30)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    transport = Broken(RuntimeError("the transport has a bug"))
    with pytest.raises(RuntimeError):
        delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)

    session.expire_all()
    # Nothing is left held: every row is pending again; the 25 handed to the
    # transport are counted as possible duplicates.
    assert states(session, send.id) == {"pending": 30}
    assert lifecycle.progress(session, send.id).possible_duplicates == 25
    assert session.scalar(select(func.count()).select_from(ClaimLease)) == 0
    paused = session.get(Send, send.id)
    assert paused.state == "paused"
    assert paused.paused_reason.startswith("stopped at send time:")
    assert "RuntimeError: the transport has a bug" in paused.paused_reason
    assert lifecycle.tick(session, settings) == []  # it does not loop

    scheduling.resume(session, send.id)
    session.commit()
    run_send(session, settings, transport, send.id)
    assert states(session, send.id) == {"sent": 30}
    assert len(set(transport.recipients())) == 30


def test_a_run_that_lost_the_database_gives_its_rows_back_and_the_next_tick_hands_them_out(session, fast):
    from sqlalchemy.exc import OperationalError

    _, lst, issue = make_world(session, 10)
    settings = replace(fast, batch_size=10)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=10)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    transport = Broken(OperationalError("UPDATE deliveries", {}, Exception("server closed the connection")))
    with pytest.raises(OperationalError):
        delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)

    session.expire_all()
    assert session.get(Send, send.id).state == "sending"  # it passes: no pause
    assert states(session, send.id) == {"pending": 10}
    assert lifecycle.progress(session, send.id).possible_duplicates == 10
    # Not after CLAIM_TIMEOUT_SECONDS: at the very next tick.
    assert lifecycle.tick(session, settings) == [batch_id]


def test_a_message_that_cannot_be_built_pauses_the_send_with_the_reason_and_holds_nothing(session, fast):
    _, lst, issue = make_world(session, 10)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    # A subject that slipped past the checks (schedule_send refuses one): changed in the database after.
    session.execute(update(IssueRow).where(IssueRow.id == issue.id).values(subject="Hello\r\nBcc: someone@example.net"))
    session.commit()
    batch_ids = lifecycle.tick(session, fast)
    transport = MemoryTransport()
    report = delivery.Deliverer(fast, transport).deliver_batch(session, batch_ids[0])

    assert report.stopped == "paused" and report.claimed == 0
    session.expire_all()
    paused = session.get(Send, send.id)
    assert paused.state == "paused"
    assert "field subject" in paused.paused_reason and "line break" in paused.paused_reason
    assert states(session, send.id) == {"pending": 10}
    assert transport.recipients() == []
    assert lifecycle.tick(session, fast) == []
    assert delivery.Deliverer(fast, transport).deliver_batch(session, batch_ids[1]).stopped == "paused"


def test_a_resumed_send_is_handed_out_at_the_next_tick(session, fast):
    _, lst, issue = make_world(session, 30)
    settings = replace(fast, batch_size=10, claim_timeout_seconds=3600)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=10)
    session.commit()
    batch_ids = lifecycle.tick(session, settings)
    transport = MemoryTransport()
    delivery.Deliverer(settings, transport).deliver_batch(session, batch_ids[0])
    scheduling.pause(session, send.id)
    session.commit()
    for batch_id in batch_ids[1:]:  # their tasks come while it is paused
        assert delivery.Deliverer(settings, transport).deliver_batch(session, batch_id).stopped == "paused"
    assert lifecycle.tick(session, settings) == []

    scheduling.resume(session, send.id)
    session.commit()
    assert lifecycle.tick(session, settings) == batch_ids[1:]
    assert lifecycle.tick(session, settings) == []  # once


def test_a_send_resumed_after_its_error_budget_paused_it_is_handed_out_at_the_next_tick(session, settings):
    _, lst, issue = make_world(session, 40)
    settings = replace(settings, error_budget_ratio=0.5, error_budget_minimum=10, batch_size=20,
                       claim_timeout_seconds=3600, retry_base_delay_seconds=3600)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=20)
    session.commit()
    transport = MemoryTransport()
    transport.temporary = {f"reader{i:03d}@example.com": 1 for i in range(15)}
    batch_ids = lifecycle.tick(session, settings)
    delivery.Deliverer(settings, transport).deliver_batch(session, batch_ids[0])
    delivery.Deliverer(settings, transport).deliver_batch(session, batch_ids[1])
    session.expire_all()
    assert session.get(Send, send.id).state == "paused"
    assert states(session, send.id) == {"sent": 5, "retry": 15, "pending": 20}

    scheduling.resume(session, send.id)
    session.commit()
    assert lifecycle.tick(session, settings) == [batch_ids[1]]


class Overlapping(MemoryTransport):
    """A transport that takes a chunk while another is out, as the SMTP transport does;
    it answers the first chunk only once the second has come (or raises on the
    second, when told to)."""

    concurrent_calls = True

    def __init__(self, fail_second: bool = False):
        super().__init__()
        self.fail_second = fail_second
        self.second_came = threading.Event()
        self.out, self.most_out, self.started = 0, 0, 0

    def send_many(self, envelopes):
        with self._lock:
            self.started += 1
            number = self.started
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        try:
            if number == 2:
                self.second_came.set()
                if self.fail_second:
                    raise RuntimeError("the connection threads stopped")
            if number == 1:
                assert self.second_came.wait(timeout=60), "the next chunk never came while this one was out"
            return super().send_many(envelopes)
        finally:
            with self._lock:
                self.out -= 1


def test_a_transport_that_takes_calls_concurrently_gets_the_next_chunk_before_the_last_is_answered(session, fast):
    _, lst, issue = make_world(session, 60)
    settings = replace(fast, batch_size=60, smtp_connections=1)  # chunks of 25
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=60)
    session.commit()
    transport = Overlapping()
    run_send(session, settings, transport, send.id)

    assert transport.most_out == 2  # never more than two chunks in doubt
    assert states(session, send.id) == {"sent": 60}
    assert sorted(transport.recipients()) == [f"reader{i:03d}@example.com" for i in range(60)]
    assert lifecycle.progress(session, send.id).possible_duplicates == 0


def test_a_failure_with_chunks_out_records_what_was_answered_and_flags_what_was_in_doubt(session, fast):
    _, lst, issue = make_world(session, 60)
    settings = replace(fast, batch_size=60, smtp_connections=1)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=60)
    session.commit()
    [batch_id] = lifecycle.tick(session, settings)
    transport = Overlapping(fail_second=True)
    with pytest.raises(RuntimeError):
        delivery.Deliverer(settings, transport).deliver_batch(session, batch_id)

    session.expire_all()
    # The first chunk was answered and recorded while the second was out; the
    # second failed once the third (the last 10) had been handed over too: those
    # two chunks were in doubt, and are given back flagged.
    assert states(session, send.id) == {"sent": 25, "pending": 35}
    assert lifecycle.progress(session, send.id).possible_duplicates == 35
    assert len(transport.recipients()) == 35  # the first chunk and the third went out
    assert session.scalar(select(func.count()).select_from(ClaimLease)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_error_budget_pauses_a_send_as_the_refusals_arrive_whichever_worker_meets_them(session, settings, smtp_server):
    # A server that refuses everything; two workers, each on a batch of 100 in
    # chunks of 25. The budget (20% of at least 25) is spent by the first
    # chunk recorded; each worker may have had two chunks out by then (the next
    # one goes over before the last is answered), and nothing more goes.
    from tests.beat_and_workers import Workers

    failing = replace(settings, transport="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                      smtp_security="none", smtp_connections=1, smtp_timeout=10, batch_size=100,
                      error_budget_ratio=0.2, error_budget_minimum=25, retry_attempts=1)
    _, lst, issue = make_world(session, 400)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=failing.batch_size)
    session.commit()
    smtp_server.fail_next(10_000, "550 5.7.1 Message refused", at="data")

    with Workers(failing, count=2) as workers:
        for _ in range(600):
            session.expire_all()
            counts = states(session, send.id)
            if session.get(Send, send.id).state == "paused" and not counts.get("claimed") and not counts.get("sending"):
                break
            time.sleep(0.05)
    assert not workers.errors, workers.errors

    paused = session.get(Send, send.id)
    assert paused.state == "paused"
    assert "error budget exceeded" in paused.paused_reason and "550 5.7.1 Message refused" in paused.paused_reason
    refused = states(session, send.id).get("failed", 0)
    assert 25 <= refused <= 25 + 2 * 2 * 25  # the minimum, and what each worker had out
    assert states(session, send.id) == {"failed": refused, "pending": 400 - refused}


def test_a_policy_refusal_fails_the_row_without_suppressing_and_resume_sends_it_once_fixed(session, settings, smtp_server):
    # The server refuses the content (550 5.7.1): not the addresses' fault.
    strict = replace(settings, error_budget_ratio=0.5, error_budget_minimum=10, batch_size=20, smtp_connections=1,
                     retry_base_delay_seconds=0.0)
    _, lst, issue = make_world(session, 20)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=20)
    session.commit()
    smtp_server.fail_for(3600, "550 5.7.1 Message rejected as spam by content filter", at="data")
    transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none", connections=1, timeout=10)

    with transport:
        run_send(session, strict, transport, send.id)
        session.expire_all()
        assert session.get(Send, send.id).state == "paused"  # by the error budget
        refused = session.scalars(select(Delivery).where(Delivery.send_id == send.id, Delivery.state == "failed")).all()
        assert len(refused) == 20 and smtp_server.messages == []
        assert all(r.last_error.startswith("refused by the server's policy, not for the address: 550 5.7.1")
                   for r in refused)
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0  # nobody is suppressed

        smtp_server.stop_failing()  # the operator fixed the content
        scheduling.resume(session, send.id)
        session.commit()
        run_send(session, strict, transport, send.id)

    session.expire_all()
    assert session.get(Send, send.id).state == "finished"
    assert states(session, send.id) == {"sent": 20}
    received = sorted(r for m in smtp_server.messages for r in m.recipients)
    assert received == [f"reader{i:03d}@example.com" for i in range(20)]  # each once, the refused ones too
