"""The ops snapshot on SQLite and PostgreSQL: counts, rates, errors, problems,
retry-failed and worker heartbeats, driven through the real Deliverer."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from sqlalchemy import select, update

from newsletter.sending import scheduling
from newsletter.logs import configure_logging, log_context
from newsletter.ops.broker import FolderBroker
from newsletter.ops.heartbeats import record_heartbeat, record_stopped, worker_statuses
from newsletter.ops.status import collect_status
from newsletter.sending.delivery import Deliverer
from newsletter.sending.lifecycle import batches_to_requeue, claim_due_sends, finish_sends
from newsletter.audience.suppressions import add_suppression
from newsletter.store.models import Delivery, Send, utcnow
from tests.conftest import SAMPLE_ISSUE
from tests.memory_transport import MemoryTransport

QUEUES = ("control", "send")


@pytest.fixture(scope="module")
def rendered():
    from newsletter.authoring.publishing import checked_render

    return checked_render(SAMPLE_ISSUE)[0]


def address(n: int) -> str:
    return f"reader{n:03d}@example.com"


def start_send(session, settings, rendered, subscribers: int) -> int:
    from newsletter.store.issues import store_issue
    from newsletter.audience.subscribers import add_subscriber, create_list

    slug = rendered.issue.publication.slug
    issue = store_issue(session, rendered)
    mailing_list = create_list(session, slug, "everyone", "Everyone")
    for n in range(subscribers):
        add_subscriber(session, address(n), lists=["everyone"], publication_slug=slug)
    send = scheduling.schedule_send(session, issue, mailing_list, None, batch_size=10)
    session.commit()
    claim_due_sends(session, settings)
    return send.id


def deliver_all(session, settings, transport, send_id: int) -> None:
    deliverer = Deliverer(settings, transport)
    for batch_id in batches_to_requeue(session, settings, utcnow() + timedelta(days=1)) or _batches(session, send_id):
        deliverer.deliver_batch(session, batch_id)
    finish_sends(session)
    session.commit()


def _batches(session, send_id):
    from newsletter.store.models import Batch

    return session.scalars(select(Batch.id).where(Batch.send_id == send_id).order_by(Batch.id)).all()


@pytest.fixture
def broker(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    return FolderBroker(folder)


def status(session, settings, broker):
    return collect_status(session, settings, broker)


def test_a_finished_send_shows_its_counts_errors_and_bounce_rate(session, settings, rendered, broker):
    transport = MemoryTransport()
    transport.permanent[address(3)] = (550, "5.1.1", "<reader003@example.com>: user unknown")
    transport.permanent[address(4)] = (550, "5.1.1", "<reader004@example.com>: user unknown")
    transport.permanent[address(5)] = (554, "5.7.1", "refused by policy")
    send_id = start_send(session, settings, rendered, 40)
    deliver_all(session, settings, transport, send_id)

    snapshot = status(session, settings, broker)
    send = next(s for s in snapshot.sends if s.send_id == send_id)
    assert (send.state, send.sent, send.failed, send.pending) == ("finished", 37, 3, 0)
    assert send.bounces == 3 and send.bounce_rate == pytest.approx(3 / 40)
    # Two different addresses, one reason.
    assert [(e.reason, e.count) for e in send.errors] == [
        ("550 5.1.1 <address>: user unknown", 2),
        ("refused by the server's policy, not for the address: 554 5.7.1 refused by policy", 1),
    ]
    assert any(p.kind == "bounce_rate" and p.subject == f"send {send_id}" for p in snapshot.problems)
    assert json.loads(json.dumps(snapshot.to_dict()))["sends"][0]["bounce_rate"] == pytest.approx(3 / 40)


def test_a_complaint_reported_for_a_recipient_after_the_send_started_counts_against_it(session, settings, rendered, broker):
    send_id = start_send(session, settings, rendered, 20)
    deliver_all(session, settings, MemoryTransport(), send_id)
    add_suppression(session, address(1), "complaint", "feedback loop")
    session.commit()
    snapshot = status(session, settings, broker)
    send = next(s for s in snapshot.sends if s.send_id == send_id)
    assert send.complaints == 1 and send.complaint_rate == pytest.approx(1 / 20)
    assert [p.severity for p in snapshot.problems if p.kind == "complaint_rate"] == ["critical"]


@pytest.mark.parametrize("complaints, expected", [(1, []), (2, ["warning"]), (3, ["critical"])])
def test_complaints_above_a_tenth_of_a_percent_warn_and_from_three_tenths_are_critical(settings, complaints, expected):
    from newsletter.ops.problems import rate_problems
    from newsletter.ops.sends import SendStatus

    send = SendStatus(
        send_id=1, publication="p", issue="i", list="l", state="finished", audience=1000, sent=1000, failed=0,
        skipped=0, cancelled=0, pending=0, possible_duplicates=0, orphaned_claims=0, rate_per_second=0.0,
        expected_finish_at=None, scheduled_at=utcnow(), started_at=utcnow(), finished_at=utcnow(),
        last_progress_at=utcnow(), paused_reason="", bounces=0, complaints=complaints,
    )
    assert [p.severity for p in rate_problems(settings, send) if p.kind == "complaint_rate"] == expected


def test_a_send_that_stopped_moving_and_rows_held_too_long_are_problems(session, settings, rendered, broker):
    send_id = start_send(session, settings, rendered, 20)
    long_ago = utcnow() - timedelta(seconds=settings.stall_warning_seconds + settings.claim_timeout_seconds + 60)
    first_rows = select(Delivery.id).where(Delivery.send_id == send_id).order_by(Delivery.id).limit(5)
    session.execute(
        update(Delivery).where(Delivery.id.in_(first_rows))
        .values(state="sending", claimed_by="elsewhere.example.net:123:abcd1234", claimed_at=long_ago)
    )
    session.execute(update(Send).where(Send.id == send_id).values(last_progress_at=long_ago))
    session.commit()

    snapshot = status(session, settings, broker)
    send = next(s for s in snapshot.sends if s.send_id == send_id)
    assert send.orphaned_claims == 5 and send.pending == 20
    kinds = {p.kind for p in snapshot.problems if p.subject == f"send {send_id}"}
    assert {"stalled_send", "orphaned_claims"} <= kinds


def test_retry_failed_puts_back_only_failed_rows_that_are_not_suppressed_or_hard_bounced(session, settings, rendered):
    transport = MemoryTransport()
    transport.permanent[address(1)] = (550, "5.1.1", "user unknown")  # hard bounce: suppressed
    transport.permanent[address(2)] = (554, "5.7.1", "refused by policy")
    transport.permanent[address(3)] = (554, "5.7.1", "refused by policy")
    send_id = start_send(session, settings, rendered, 25)
    deliver_all(session, settings, transport, send_id)
    add_suppression(session, address(3), "complaint", "feedback loop")
    session.commit()
    assert session.get(Send, send_id).state == "finished"

    assert scheduling.retry_failed(session, send_id) == 1
    session.commit()
    assert session.get(Send, send_id).state == "sending"
    rows = dict(session.execute(select(Delivery.email, Delivery.state).where(Delivery.send_id == send_id)).all())
    assert rows[address(2)] == "retry" and rows[address(1)] == rows[address(3)] == "failed"

    transport.permanent.clear()
    before = {e.recipient for e in transport.accepted}
    deliver_all(session, settings, transport, send_id)
    again = [e.recipient for e in transport.accepted if e.recipient not in before]
    assert again == [address(2)]
    assert session.get(Send, send_id).state == "finished"


def test_retry_failed_refuses_a_send_that_has_not_started(session, settings, rendered):
    from newsletter.errors import InputError
    from newsletter.store.issues import store_issue
    from newsletter.audience.subscribers import create_list

    issue = store_issue(session, rendered)
    mailing_list = create_list(session, rendered.issue.publication.slug, "later", "Later")
    send = scheduling.schedule_send(session, issue, mailing_list, utcnow() + timedelta(days=1))
    with pytest.raises(InputError, match="scheduled"):
        scheduling.retry_failed(session, send.id)


def test_workers_are_running_stopped_or_gone_by_their_heartbeats(session, settings):
    now = utcnow()
    record_heartbeat(session, node="send@a", queues=("send",), concurrency=4, active_tasks=2, now=now)
    record_heartbeat(session, node="control@a", queues=("control",), concurrency=1, active_tasks=0,
                     now=now - timedelta(seconds=settings.worker_heartbeat_seconds * 4))
    record_heartbeat(session, node="old@a", queues=("send",), concurrency=1, active_tasks=0, now=now)
    record_stopped(session, "old@a")
    session.commit()
    by_node = {w.node: w for w in worker_statuses(session, settings)}
    assert (by_node["send@a"].state, by_node["send@a"].active_tasks, by_node["send@a"].queues) == ("running", 2, ("send",))
    assert by_node["control@a"].state == "gone"
    assert by_node["old@a"].state == "stopped"


def test_a_queue_with_messages_but_no_running_consumer_is_a_problem(session, settings, broker):
    record_heartbeat(session, node="send@a", queues=("send",), concurrency=1, active_tasks=0)
    session.commit()
    for n in range(3):
        (broker.folder / f"{1000 + n}_id{n}.control.msg").write_bytes(b"{}")
    (broker.folder / "1000_idx.send.msg").write_bytes(b"{}")
    snapshot = status(session, settings, broker)
    depths = {q.name: q.depth for q in snapshot.queues}
    assert depths == {"control": 3, "send": 1}
    assert [p.subject for p in snapshot.problems if p.kind == "queue_without_consumer"] == ["queue control"]


def test_log_lines_carry_the_send_and_batch_they_are_about(settings):
    stream = StringIO()
    json_settings = settings.__class__(**{**settings.__dict__, "log_format": "json"})
    handler = configure_logging(json_settings, stream)
    try:
        with log_context(send_id=12, batch_id=34):
            logging.getLogger("newsletter.test").info("batch %s done", 34, extra={"sent": 20})
        logging.getLogger("newsletter.test").info("between sends")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["message"], first["send_id"], first["batch_id"], first["sent"]) == ("batch 34 done", 12, 34, 20)
    assert first["level"] == "info" and first["logger"] == "newsletter.test"
    assert "send_id" not in second
