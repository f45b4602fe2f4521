"""`newsletter ops` and `newsletter sends` against real workers, beat, Redis,
PostgreSQL and an SMTP server: what an operator sees while a send runs."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.pipeline import Pipeline, newsletter, status

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(tmp_path, postgres_url, redis_url, smtp):
    p = Pipeline(tmp_path, postgres_url, redis_url, smtp, WORKER_HEARTBEAT_SECONDS=1, LOG_FORMAT="json")
    p.env["COLUMNS"] = "200"  # a wide terminal: table cells are not wrapped
    yield p
    p.stop_all()


def send_in(snapshot: dict, send_id: int) -> dict:
    return next(s for s in snapshot["sends"] if s["send_id"] == send_id)


def received(smtp) -> Counter:
    return Counter(r for m in smtp.messages for r in m.recipients)


def test_status_shows_a_send_in_progress_with_its_live_counts(pipeline, smtp):
    # The server takes 40 messages and holds the rest until the status has been
    # read, so the send is under way then, however fast this machine is today.
    # Batches are 20, and two run at once: of 40 answered, one batch is whole.
    smtp.hold_after(40)
    pipeline.env["SMTP_TIMEOUT"] = "600"  # a held reply is a slow server, not a lost line
    send_id = pipeline.prepare(100, delay=0.5)
    pipeline.start_worker()
    pipeline.start_beat()
    pipeline.wait_for(lambda: pipeline.progress(send_id).counts.get("sent", 0) >= 20, what="a batch to be recorded")

    before = pipeline.progress(send_id).counts.get("sent", 0)
    snapshot = status(pipeline)
    arrived = len(smtp.messages)
    smtp.release()

    send = send_in(snapshot, send_id)
    assert send["state"] == "sending" and send["audience"] == 100
    # The ledger records a message after the server took it.
    assert before <= send["sent"] <= arrived
    assert send["sent"] + send["failed"] + send["skipped"] + send["cancelled"] + send["pending"] == 100
    assert send["rate_per_second"] > 0 and send["expected_finish_at"]
    workers = [w for w in snapshot["workers"] if w["node"].startswith("worker@")]
    assert workers and workers[0]["state"] == "running"
    assert set(workers[0]["queues"]) == {"send", "control"} and workers[0]["concurrency"] == 2
    assert {q["name"] for q in snapshot["queues"]} == {"send", "control"}

    pipeline.wait_finished(send_id)
    send = send_in(status(pipeline), send_id)
    assert (send["state"], send["sent"], send["pending"], send["possible_duplicates"]) == ("finished", 100, 0, 0)

    # Every log line a batch task wrote, Celery's own included, names its send and batch.
    batch_lines = [line for line in worker_log_lines(pipeline) if "deliver_batch" in line["message"]
                   and "succeeded" in line["message"] or line["logger"] == "workers.tasks"]
    assert len(batch_lines) >= 10  # 100 recipients in batches of 20: a summary and a Celery line each
    assert all(line["send_id"] == send_id and isinstance(line["batch_id"], int) for line in batch_lines)


def worker_log_lines(pipeline) -> list[dict]:
    lines = []
    for text in (pipeline.logs / "worker.log").read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def test_pausing_stops_messages_within_seconds_and_resuming_finishes_with_nothing_lost_or_repeated(pipeline, smtp):
    # The server takes 10 messages and holds the rest until the pause is in,
    # so the pause lands half way however fast this machine is today.
    smtp.hold_after(10)
    pipeline.env["SMTP_TIMEOUT"] = "600"  # a held reply is a slow server, not a lost line
    send_id = pipeline.prepare(150, delay=0.5)
    pipeline.start_worker("worker-1", concurrency=1)
    pipeline.start_worker("worker-2", concurrency=1)
    pipeline.start_beat()
    pipeline.wait_for(lambda: len(smtp.messages) >= 10, what="the send to be under way")

    newsletter(pipeline, "sends", "pause", str(send_id))
    smtp.release()
    # The chunks in flight finish; nothing more is claimed.
    pipeline.wait_for(lambda: not pipeline.in_flight(send_id), what="the chunks in flight to finish")
    paused_at = len(smtp.messages)
    time.sleep(2)  # a paused send stays still: nothing may arrive meanwhile
    assert len(smtp.messages) == paused_at < 150

    # While paused the counts are still: the terminal, the ledger and the server agree.
    send = send_in(status(pipeline), send_id)
    assert send["state"] == "paused"
    assert send["sent"] == paused_at == pipeline.progress(send_id).counts["sent"]
    assert send["pending"] == 150 - paused_at

    newsletter(pipeline, "sends", "resume", str(send_id))
    progress = pipeline.wait_finished(send_id)
    counts = received(smtp)
    assert set(counts) == {pipeline.address(n) for n in range(150)}
    assert set(counts.values()) == {1}
    assert progress.counts == {"sent": 150}


def test_a_killed_worker_shows_as_gone_and_its_claimed_rows_are_reported_then_released(pipeline, smtp):
    smtp.hold_after(20)  # the rest wait at the server: worker-1 dies holding rows
    send_id = pipeline.prepare(80, delay=0.5)
    pipeline.start_worker("worker-1")
    pipeline.start_beat()
    pipeline.wait_for(lambda: len(smtp.messages) >= 20 and pipeline.progress(send_id).counts.get("sending"),
                      what="rows being sent")
    # Beat goes too, so nothing hands the rows out again before they are seen.
    pipeline.kill("beat")
    pipeline.kill("worker-1")
    smtp.release()

    # Rows count as orphaned once their holder's lease lapses or its process is gone.
    snapshot = pipeline.wait_for(lambda: (s := status(pipeline)) and send_in(s, send_id)["orphaned_claims"] and s,
                                 what="the orphaned rows to be reported")
    worker = next(w for w in snapshot["workers"] if w["node"].startswith("worker-1@"))
    assert worker["state"] == "gone"
    send = send_in(snapshot, send_id)
    assert send["orphaned_claims"] > 0
    kinds = {(p["kind"], p["subject"]) for p in snapshot["problems"]}
    assert ("worker_gone", f"worker {worker['node']}") in kinds
    assert ("orphaned_claims", f"send {send_id}") in kinds

    pipeline.start_beat()
    pipeline.start_worker("worker-2")
    pipeline.wait_finished(send_id, timeout=120)
    send = send_in(status(pipeline), send_id)
    assert send["orphaned_claims"] == 0 and send["sent"] == 80
    assert set(received(smtp)) == {pipeline.address(n) for n in range(80)}


def test_a_queue_with_messages_and_no_consumer_is_reported(pipeline, smtp):
    pipeline.start_beat()  # ticks go to the control queue; no worker takes them
    pipeline.wait_for(lambda: next(q for q in status(pipeline)["queues"] if q["name"] == "control")["depth"] >= 2,
                      what="ticks to pile up")
    snapshot = status(pipeline)
    control = next(q for q in snapshot["queues"] if q["name"] == "control")
    assert control["oldest_age_seconds"] is not None and control["oldest_age_seconds"] >= 0
    problem = next(p for p in snapshot["problems"] if p["kind"] == "queue_without_consumer")
    assert problem["subject"] == "queue control" and problem["severity"] == "critical"

    health = newsletter(pipeline, "ops", "health", "--worker", check=False)
    assert health.returncode == 1 and "control" in health.stderr

    text = newsletter(pipeline, "ops", "status").stdout
    assert "no running worker consumes this queue" in text


def test_retry_failed_sends_again_to_the_failed_recipients_only(pipeline, smtp):
    smtp.reject_recipients(pipeline.address(7), pipeline.address(8))  # 5.1.1: hard bounces
    smtp.fail_next(2, "550 5.7.1 Message refused by policy", at="rcpt")  # refused once, for good
    send_id = pipeline.prepare(30)
    pipeline.start_worker()
    pipeline.start_beat()
    assert pipeline.wait_finished(send_id).counts == {"sent": 26, "failed": 4}
    refused = {pipeline.address(n) for n in range(30)} - set(received(smtp)) - {pipeline.address(7), pipeline.address(8)}
    assert len(refused) == 2
    before = received(smtp)

    result = newsletter(pipeline, "sends", "retry-failed", str(send_id))
    assert "2 failed recipients" in result.stdout
    progress = pipeline.wait_for(
        lambda: (p := pipeline.progress(send_id)).state == "finished" and p.counts.get("sent") == 28 and p,
        what="the retried recipients to be sent",
    )
    assert progress.counts == {"sent": 28, "failed": 2}
    again = received(smtp) - before
    assert set(again) == refused and set(again.values()) == {1}
    assert pipeline.address(7) not in received(smtp) and pipeline.address(8) not in received(smtp)
