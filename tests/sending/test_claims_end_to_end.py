"""None twice, none stuck: claims, takeovers, crashes and resumes with real
Celery workers and beat, Redis, PostgreSQL and an SMTP server on loopback.

Every test holds what the server received against the ledger: each
subscriber got the issue, and everyone who got it twice is flagged as a
possible duplicate. The server holds messages unanswered (``smtp.hold``) to
put a worker mid-send for as long as a test needs; nothing waits on a clock.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from newsletter.sending import scheduling
from newsletter.store.db import session_scope
from newsletter.store.models import BatchRun, Delivery, IssueRow, Send
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
        import json

        snapshot = json.loads(newsletter(pipeline, "ops", "status", "--json"))
        problem = next(p for p in snapshot["problems"] if p["kind"] == "paused_by_send_failure")
        assert problem["subject"] == f"send {send_id}" and "field subject" in problem["message"]
        assert f"newsletter sends resume {send_id}" in problem["fix"]
    finally:
        pipeline.stop_all()
