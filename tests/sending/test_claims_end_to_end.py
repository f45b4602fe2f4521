"""None twice, none stuck: claims, takeovers, crashes and resumes with real
Celery workers and beat, Redis, PostgreSQL and an SMTP server on loopback.

Every test holds what the server received against the ledger: each
subscriber got the issue, and everyone who got it twice is flagged as a
possible duplicate. The server holds messages unanswered (``smtp.hold``) to
put a worker mid-send for as long as a test needs; nothing waits on a clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from newsletter.sending import scheduling
from newsletter.store.db import session_scope
from newsletter.store.models import Batch, BatchRun, Delivery, IssueRow, Send
from tests.own_postgres import OwnPostgres
from tests.pipeline import Pipeline
from tests.smtp_server import SmtpTestServer

pytestmark = pytest.mark.slow

# Long enough that no test here can pass by waiting for the stale-claim and
# stalled-send timeouts: only the leases, the beat and the ledger may move it.
NEVER = 3600


@pytest.fixture
def smtp():
    with SmtpTestServer() as server:
        yield server


def received(smtp) -> Counter:
    return Counter(r for m in smtp.messages for r in m.recipients)


def flagged(pipeline, send_id: int) -> set[str]:
    with session_scope(pipeline.settings) as session:
        return set(session.scalars(
            select(Delivery.email).where(Delivery.send_id == send_id, Delivery.possible_duplicate.is_(True))
        ).all())


def holders_sending(pipeline, send_id: int) -> set[str]:
    with session_scope(pipeline.settings) as session:
        return set(session.scalars(
            select(Delivery.claimed_by).where(Delivery.send_id == send_id, Delivery.state == "sending")
        ).all())


def batch_runs(pipeline, send_id: int, worker: str | None = None) -> int:
    with session_scope(pipeline.settings) as session:
        query = select(func.count()).select_from(BatchRun).where(BatchRun.send_id == send_id)
        if worker is not None:
            query = query.where(BatchRun.worker == worker)
        return session.scalar(query)


def assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id: int, subscribers: int):
    progress = pipeline.progress(send_id)
    counts = received(smtp)
    assert set(counts) == {pipeline.address(n) for n in range(subscribers)}
    assert progress.counts == {"sent": subscribers}
    twice = {address for address, count in counts.items() if count > 1}
    assert twice <= flagged(pipeline, send_id), "a subscriber got a second copy the ledger does not count"
    return twice


def pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def newsletter(pipeline, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "newsletter", *args], env=pipeline.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- a claim taken over from a live worker -------------------------------------------


def test_a_worker_whose_claim_was_taken_over_sends_none_of_it_again_and_every_duplicate_is_counted(
    tmp_path, postgres_url, redis_url, smtp
):
    # Worker A's server stops answering in the middle of its first chunk. A
    # makes no progress for CLAIM_TIMEOUT_SECONDS, its lease lapses, and worker
    # B takes the batch over and finishes the send. Then A's server answers.
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=40,
                        CLAIM_TIMEOUT_SECONDS=2, CLAIM_LEASE_SECONDS=2, SMTP_TIMEOUT=600)
    try:
        smtp.hold(1)
        send_id = pipeline.prepare(40, delay=0.5)
        pipeline.start_worker("worker-a", concurrency=1)
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 1, what="worker A to be stuck mid-send")
        [holder_a] = holders_sending(pipeline, send_id)
        pipeline.start_worker("worker-b", concurrency=1)
        pipeline.wait_finished(send_id)

        smtp.release()  # A's server answers after all; A carries on
        pipeline.wait_for(lambda: batch_runs(pipeline, send_id, holder_a), what="worker A's run to end")
        twice = assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 40)
    finally:
        pipeline.stop_all()
    assert twice, "worker A's first chunk reached the server twice; the test did not take a claim over"
    assert max(received(smtp).values()) == 2


# --- a killed pool child ----------------------------------------------------------------


def test_a_killed_pool_child_costs_a_stall_and_nothing_stays_stuck(tmp_path, postgres_url, redis_url, smtp):
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=20,
                        CLAIM_TIMEOUT_SECONDS=NEVER, CLAIM_LEASE_SECONDS=3)
    try:
        smtp.hold(2)
        send_id = pipeline.prepare(100, delay=0.5)
        worker = pipeline.start_worker("worker", concurrency=2)
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 2, what="both pool children to be mid-send")
        children = pool_children(worker.pid)
        sending_pids = {int(h.split(":")[1]) for h in holders_sending(pipeline, send_id)}
        victim = next((pid for pid in children if pid in sending_pids), children[0])
        os.kill(victim, signal.SIGKILL)
        smtp.release()
        pipeline.wait_finished(send_id, timeout=180)
        assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 100)
    finally:
        pipeline.stop_all()


# --- a worker host lost -------------------------------------------------------------------


def test_rows_of_a_worker_host_that_died_are_taken_over_by_another_host_within_a_lease(
    tmp_path, postgres_url, redis_url, smtp
):
    # Two "hosts" on this machine: a worker in a UTS namespace of its own is
    # another host to the ledger, so only its lease can tell it is gone.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a second hostname needs root and unshare")
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=20,
                        CLAIM_TIMEOUT_SECONDS=NEVER, CLAIM_LEASE_SECONDS=3)
    try:
        smtp.hold(1)
        send_id = pipeline.prepare(60, delay=0.5)
        pipeline.start_worker("far", concurrency=1, host="far-host.example.net")
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 1, what="the far host's worker to be mid-send")
        [holder] = holders_sending(pipeline, send_id)
        assert holder.startswith("far-host.example.net:")
        pipeline.kill("far")  # the whole host goes, its worker and pool with it
        smtp.release()
        pipeline.start_worker("near", concurrency=1)
        pipeline.wait_finished(send_id, timeout=180)
        twice = assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 60)
    finally:
        pipeline.stop_all()
    assert twice <= {pipeline.address(n) for n in range(20)}  # only the far host's chunk was in doubt


# --- PostgreSQL restarted mid-send -------------------------------------------------------


def test_a_postgresql_restart_mid_send_costs_a_stall_and_nothing_stays_stuck(tmp_path, redis_url, smtp):
    own = OwnPostgres().start()
    pipeline = Pipeline(tmp_path, own.url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=20,
                        CLAIM_TIMEOUT_SECONDS=NEVER, CLAIM_LEASE_SECONDS=3)
    worker_log = pipeline.logs / "worker.log"
    # Celery's line for a task that failed (or will try again) for want of its database.
    failed = re.compile(r"deliver_batch\[[^\]]+\] (raised unexpected|retry: Retry in \d+s): OperationalError")
    try:
        smtp.hold(1)
        send_id = pipeline.prepare(60, delay=0.5)
        pipeline.start_worker("worker", concurrency=1)
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 1, what="a chunk to be at the server")
        own.stop()  # the chunk went out; its answers cannot be written down
        smtp.release()
        pipeline.wait_for(lambda: failed.search(worker_log.read_text(errors="replace")),
                          what="the batch task to fail for want of its database")
        own.start()
        pipeline.wait_finished(send_id, timeout=180)
        twice = assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 60)
    finally:
        pipeline.stop_all()
        own.remove()
    assert len(twice) == 20  # the chunk whose answers were lost went out again, counted


# --- resume -------------------------------------------------------------------------------


def _paused_mid_send(pipeline, smtp, send_id: int, pause) -> None:
    """Start the send, pause it while its first batch is at the server, and
    wait until every batch task has come and gone while it is paused."""
    pipeline.start_worker("worker", concurrency=1)
    pipeline.start_beat()
    pipeline.wait_for(lambda: smtp.held == 1, what="the first batch to be at the server")
    pause()
    smtp.release()
    pipeline.wait_for(lambda: batch_runs(pipeline, send_id) >= 3, what="the batch tasks to run while paused")
    progress = pipeline.progress(send_id)
    assert progress.state == "paused"
    assert not progress.counts.get("claimed") and not progress.counts.get("sending")


def test_a_resumed_send_goes_out_again_at_the_next_tick(tmp_path, postgres_url, redis_url, smtp):
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=20,
                        CLAIM_TIMEOUT_SECONDS=NEVER)
    try:
        smtp.hold(1)
        send_id = pipeline.prepare(60, delay=0.5)

        def pause():
            with session_scope(pipeline.settings) as session:
                scheduling.pause(session, send_id)

        _paused_mid_send(pipeline, smtp, send_id, pause)
        assert len(smtp.messages) == 20
        newsletter(pipeline, "sends", "resume", str(send_id))
        pipeline.wait_finished(send_id, timeout=120)
        assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 60)
        assert set(received(smtp).values()) == {1}
    finally:
        pipeline.stop_all()


def test_a_send_resumed_after_its_error_budget_paused_it_goes_out_at_the_next_tick(
    tmp_path, postgres_url, redis_url, smtp
):
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=20,
                        CLAIM_TIMEOUT_SECONDS=NEVER, ERROR_BUDGET_RATIO=0.5, ERROR_BUDGET_MINIMUM=10)
    try:
        smtp.hold(1)
        smtp.fail_next(20, "451 4.3.0 Try again later", at="data")  # the whole first batch
        send_id = pipeline.prepare(60, delay=0.5)
        _paused_mid_send(pipeline, smtp, send_id, pause=lambda: None)
        with session_scope(pipeline.settings) as session:
            reason = session.get(Send, send_id).paused_reason
        assert reason.startswith("error budget exceeded: 20 of 20")
        newsletter(pipeline, "sends", "resume", str(send_id))
        pipeline.wait_finished(send_id, timeout=120)
        assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 60)
    finally:
        pipeline.stop_all()


# --- a failure at send time that would only repeat ------------------------------------------


def test_a_send_that_cannot_be_built_at_send_time_pauses_with_the_reason_shown(
    tmp_path, postgres_url, redis_url, smtp
):
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, BATCH_SIZE=20, CLAIM_TIMEOUT_SECONDS=NEVER)
    pipeline.env["COLUMNS"] = "300"
    try:
        send_id = pipeline.prepare(40, delay=0.5)
        with session_scope(pipeline.settings) as session:  # a subject that slipped past the checks
            issue_id = session.get(Send, send_id).issue_id
            session.execute(update(IssueRow).where(IssueRow.id == issue_id)
                            .values(subject="Hello\r\nBcc: someone@example.net"))
        pipeline.start_worker("worker", concurrency=1)
        pipeline.start_beat()
        pipeline.wait_for(lambda: pipeline.progress(send_id).state == "paused", what="the send to pause")

        progress = pipeline.progress(send_id)
        assert progress.counts == {"pending": 40}  # nothing held, nothing sent
        assert smtp.messages == []
        assert "the message cannot be built" in progress.paused_reason
        assert "field subject" in progress.paused_reason
        shown = newsletter(pipeline, "sends", "show", str(send_id))
        assert "Paused: stopped at send time: the message cannot be built" in " ".join(shown.split())
        snapshot = json.loads(newsletter(pipeline, "ops", "status", "--json"))
        problem = next(p for p in snapshot["problems"] if p["kind"] == "paused_by_send_failure")
        assert problem["subject"] == f"send {send_id}" and "field subject" in problem["message"]
        assert f"newsletter sends resume {send_id}" in problem["fix"]
    finally:
        pipeline.stop_all()


# --- a server slower than the claim timeout --------------------------------------------


def lapsed_runs(pipeline, send_id: int) -> int:
    """Batch runs that ended because they had lost their claim."""
    with session_scope(pipeline.settings) as session:
        return session.scalar(select(func.count()).select_from(BatchRun)
                              .where(BatchRun.send_id == send_id, BatchRun.stopped == "claim lapsed"))


def extra_copies(pipeline, send_id: int) -> dict[str, int]:
    with session_scope(pipeline.settings) as session:
        return dict(session.execute(
            select(Delivery.email, Delivery.extra_copies).where(Delivery.send_id == send_id, Delivery.extra_copies > 0)
        ).all())


def test_runs_that_lose_their_claim_to_a_slow_server_hand_over_no_more_and_every_extra_copy_is_counted(
    tmp_path, postgres_url, redis_url, smtp
):
    # Every answer takes longer than a run may go without progress: each run
    # loses its claim with a message at the server, another takes the batch
    # over and sends that message again, and may lose it the same way.
    # One command at a time (no pipelining): a run has one message at the server at most.
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=10,
                        CLAIM_TIMEOUT_SECONDS=1, CLAIM_LEASE_SECONDS=1, SMTP_TIMEOUT=600, SMTP_PIPELINING="false")
    try:
        smtp.reply_delay = 2.5
        send_id = pipeline.prepare(20, delay=0.5)
        pipeline.start_worker("control", concurrency=1, queues="control")
        pipeline.start_worker("senders", concurrency=3, queues="send")
        pipeline.start_beat()
        pipeline.wait_for(lambda: max(received(smtp).values(), default=0) >= 2, what="a claim to be taken over")
        smtp.reply_delay = 0  # the server recovers
        pipeline.wait_finished(send_id, timeout=180)
        pipeline.wait_for(lambda: not holders_sending(pipeline, send_id) and lapsed_runs(pipeline, send_id)
                          and batch_runs(pipeline, send_id) >= lapsed_runs(pipeline, send_id) + 2,
                          what="every run to end")
        twice = assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 20)
        real = {address: count - 1 for address, count in received(smtp).items() if count > 1}
        counted = extra_copies(pipeline, send_id)
        runs = batch_runs(pipeline, send_id)
        snapshot = json.loads(newsletter(pipeline, "ops", "status", "--json"))
    finally:
        pipeline.stop_all()
    assert twice, "no copy went out twice: the test took no claim over"
    assert counted == real  # each extra copy is counted, and only those
    [shown] = [s for s in snapshot["sends"] if s["send_id"] == send_id]
    assert shown["extra_copies"] == sum(real.values())
    # A run hands over nothing once it has lost its claim: a copy goes out twice
    # only for the message it had at the server then. At least one run of each
    # batch finished it; every other run costs one extra copy at most.
    assert sum(real.values()) <= runs - 2


# --- a worker whose host clock is wrong ----------------------------------------------------


def test_a_worker_whose_clock_is_five_minutes_fast_takes_no_rows_from_a_live_worker_nor_writes_future_times(
    tmp_path, postgres_url, redis_url, smtp
):
    import time_machine

    from newsletter.sending.delivery import Deliverer
    from newsletter.store import clock
    from newsletter.store.models import Batch
    from newsletter.transports.smtp import SmtpTransport

    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=10,
                        CLAIM_TIMEOUT_SECONDS=NEVER, CLAIM_LEASE_SECONDS=3)
    try:
        smtp.hold(1)
        send_id = pipeline.prepare(20, delay=0.5)
        pipeline.start_worker("control", concurrency=1, queues="control")
        pipeline.start_worker("live", concurrency=1, queues="send")
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 1, what="the live worker to be mid-send")
        with session_scope(pipeline.settings) as session:
            batches = session.execute(select(Batch.id, Batch.first_delivery_id, Batch.last_delivery_id)
                                      .where(Batch.send_id == send_id).order_by(Batch.id)).all()
            sending_id = session.scalar(select(Delivery.id).where(Delivery.send_id == send_id,
                                                                  Delivery.state == "sending").limit(1))
        [live_batch] = [b for b, first, last in batches if first <= sending_id <= last]
        [other_batch] = [b for b, _, _ in batches if b != live_batch]

        # Another worker, on a host whose clock is five minutes fast, is handed both batches.
        fast = Deliverer(pipeline.settings, SmtpTransport.from_settings(pipeline.settings),
                         identity="fast-host.example.net:1:ffffffff")
        try:
            with time_machine.travel(clock_now(pipeline) + timedelta(minutes=5), tick=True):
                with session_scope(pipeline.settings) as session:
                    taken = fast.deliver_batch(session, live_batch)
                    other = fast.deliver_batch(session, other_batch)
        finally:
            fast.close()
        smtp.release()
        pipeline.wait_finished(send_id, timeout=120)
        twice = assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 20)
        with session_scope(pipeline.settings) as session:
            latest = session.scalar(select(func.max(Delivery.sent_at)).where(Delivery.send_id == send_id))
            now = clock.read(session)
    finally:
        pipeline.stop_all()
    assert taken.claimed == 0  # the live worker's rows stayed its own
    assert other.sent == 10
    assert twice == set()
    assert latest <= now  # no time from the fast host's clock


def clock_now(pipeline):
    from newsletter.store import clock

    with session_scope(pipeline.settings) as session:
        return clock.read(session)


# --- a server that answers 421 for ever ---------------------------------------------------


def test_a_server_that_defers_every_message_is_called_out_and_each_row_fails_when_its_window_runs_out(
    tmp_path, postgres_url, redis_url, smtp
):
    from newsletter.ops.status import collect_status
    from newsletter.sending.outcomes import THROTTLED_TOO_LONG

    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=10,
                        CLAIM_TIMEOUT_SECONDS=NEVER, RATE_LIMIT_THROTTLE_SECONDS=0.3, RETRY_WINDOW_SECONDS=8,
                        THROTTLED_SEND_WARNING_SECONDS=1, RATE_LIMIT_ACCOUNT="newsletters-main")

    def throttled_problem():
        with session_scope(pipeline.settings) as session:
            status = collect_status(session, pipeline.settings)
        return next((p for p in status.problems if p.kind == "throttled_send"), None)

    try:
        smtp.fail_for(3600, "421 4.7.0 Too many messages, slow down", at="mail")
        send_id = pipeline.prepare(20, delay=0.5)
        pipeline.start_worker("control", concurrency=1, queues="control")
        pipeline.start_worker("worker", concurrency=1, queues="send")
        pipeline.start_beat()
        problem = pipeline.wait_for(throttled_problem, timeout=60, what="the throttled send to be called out")
        pipeline.wait_finished(send_id, timeout=120)
        progress = pipeline.progress(send_id)
        with session_scope(pipeline.settings) as session:
            reasons = set(session.scalars(select(Delivery.last_error).where(Delivery.send_id == send_id)).all())
    finally:
        pipeline.stop_all()
    assert problem.subject == f"send {send_id}" and problem.severity == "critical"
    assert "smtp account 'newsletters-main'" in problem.message and "421 4.7.0" in problem.message
    assert progress.counts == {"failed": 20}  # each row ended, none waits for ever
    assert smtp.messages == []
    assert all(reason.startswith(THROTTLED_TOO_LONG + ": ") for reason in reasons)
    assert any("421 4.7.0" in reason for reason in reasons)


# --- a broker that loses its queue --------------------------------------------------------


def test_batches_a_broker_lost_are_handed_out_again_within_their_own_wait_and_the_cause_is_named(
    tmp_path, postgres_url, redis_url, smtp
):
    import redis

    from newsletter.ops.broker import broker_view
    from newsletter.ops.status import collect_status

    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, SMTP_CONNECTIONS=1, BATCH_SIZE=10,
                        CLAIM_TIMEOUT_SECONDS=NEVER, BATCH_LOST_SECONDS=2)
    broker = broker_view(pipeline.settings)

    def depth() -> int:
        [stats] = broker.queue_stats(("send",))
        return stats.depth

    def status():
        with session_scope(pipeline.settings) as session:
            return collect_status(session, pipeline.settings)

    try:
        smtp.hold(1)
        send_id = pipeline.prepare(30, delay=0.5)
        pipeline.start_worker("control", concurrency=1, queues="control")
        pipeline.start_worker("worker", concurrency=1, queues="send")
        pipeline.start_beat()
        pipeline.wait_for(lambda: smtp.held == 1 and depth() == 2, what="one batch at the server, two queued")
        redis.Redis.from_url(redis_url).delete("send")  # the broker loses its queue
        # The one batch at the server makes no progress meanwhile; the lost
        # ones are judged on their own, not by the send's progress.
        lost = pipeline.wait_for(lambda: next((p for p in status().problems if p.kind == "batches_lost"), None),
                                 timeout=60, what="the lost batches to be named")
        # Handed out again: the two lost batches, once each (not the one at the server). The
        # queue's depth alone would say so only until a worker frees up and takes one.
        with session_scope(pipeline.settings) as session:
            enqueued = sorted(session.scalars(select(Batch.times_enqueued).where(Batch.send_id == send_id)))
        assert enqueued == [1, 2, 2]
        kinds = {p.kind for p in status().problems}
        smtp.release()
        pipeline.wait_finished(send_id, timeout=120)
        assert_none_lost_and_every_duplicate_counted(pipeline, smtp, send_id, 30)
    finally:
        pipeline.stop_all()
    assert lost.subject == f"send {send_id}" and "the broker lost them" in lost.message
    assert not kinds & {"stalled_send", "worker_gone", "queue_without_consumer"}
    assert set(received(smtp).values()) == {1}
