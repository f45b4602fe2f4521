"""Schedule -> beat -> Celery workers -> SMTP server, with real services.

Every test parses what the SMTP server received and checks that each
subscriber who should get the issue got it exactly once, and nobody else did.
"""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes, policy

import pytest

from tests.pipeline import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(tmp_path, postgres_url, redis_url, smtp):
    p = Pipeline(tmp_path, postgres_url, redis_url, smtp)
    yield p
    p.stop_all()


def received_counts(smtp) -> Counter:
    return Counter(r for m in smtp.messages for r in m.recipients)


def test_a_scheduled_issue_reaches_each_subscriber_exactly_once(pipeline, smtp):
    send_id = pipeline.prepare(60, unsubscribed=[3, 4], suppressed=[5])
    pipeline.start_worker()
    pipeline.start_beat()
    progress = pipeline.wait_finished(send_id)

    expected = {pipeline.address(n) for n in range(60)} - {pipeline.address(n) for n in (3, 4, 5)}
    counts = received_counts(smtp)
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert progress.counts == {"sent": 57}
    assert progress.possible_duplicates == 0

    message = message_from_bytes(smtp.messages[0].data, policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"]
    assert message["From"].addresses[0].addr_spec.endswith("example.org")
    assert message["Reply-To"]
    assert message["Date"]
    assert message["Message-ID"].endswith("@example.org>")
    assert message["List-Unsubscribe"].startswith("<https://newsletter.example.org/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] and message["Feedback-ID"]
    assert message["Precedence"] == "bulk"
    html = message.get_body(("html",)).get_content()
    assert "View it as a web page" in html
    assert "https://news.example.org/together-were-better/2021-09/" in html

    # The unsubscribe link in each message is that subscriber's own.
    from newsletter.store.db import session_scope
    from newsletter.store.models import Subscriber
    from newsletter.audience.tokens import read_token

    with session_scope(pipeline.settings) as session:
        for received in smtp.messages[:10]:
            message = message_from_bytes(received.data, policy=policy.default)
            token = message["List-Unsubscribe"].split("/u/")[1].split(">")[0]
            token_send, subscriber_id = read_token(pipeline.settings, "unsubscribe", token)
            assert token_send == send_id
            assert session.get(Subscriber, subscriber_id).email == received.recipients[0]
            assert token in message.get_body(("html",)).get_content()


def test_a_worker_killed_mid_send_loses_nothing_and_counts_doubts(pipeline, smtp):
    smtp.hold_after(20)  # the rest wait at the server: the kill lands mid-send
    send_id = pipeline.prepare(120, delay=0.5)
    pipeline.start_worker("worker-1")
    pipeline.start_beat()
    pipeline.wait_for(lambda: len(smtp.messages) >= 20, what="the send to be under way")
    pipeline.kill("worker-1")
    smtp.release()
    pipeline.start_worker("worker-2")
    progress = pipeline.wait_finished(send_id, timeout=180)

    counts = received_counts(smtp)
    assert set(counts) == {pipeline.address(n) for n in range(120)}
    duplicated = sum(c - 1 for c in counts.values())
    # A second copy can only be one the ledger flagged as in doubt.
    assert duplicated <= progress.possible_duplicates
    assert progress.counts == {"sent": 120}


def test_two_beats_start_the_send_once(pipeline, smtp):
    send_id = pipeline.prepare(40)
    pipeline.start_beat("beat-1")
    pipeline.start_beat("beat-2")
    pipeline.start_worker()
    pipeline.wait_finished(send_id)
    counts = received_counts(smtp)
    assert len(counts) == 40 and set(counts.values()) == {1}


def test_a_server_answering_421_and_451_for_a_while_delays_but_loses_nothing(pipeline, smtp):
    smtp.fail_next(5, "421 4.7.0 Too busy, come back later", at="mail")
    smtp.fail_for(2.0, "451 4.3.0 Try again later", at="data")
    send_id = pipeline.prepare(50)
    pipeline.start_worker()
    pipeline.start_beat()
    progress = pipeline.wait_finished(send_id)
    counts = received_counts(smtp)
    assert len(counts) == 50 and set(counts.values()) == {1}
    assert progress.counts == {"sent": 50}


def test_rejected_recipients_fail_and_are_suppressed_the_rest_arrive(pipeline, smtp):
    smtp.reject_recipients(pipeline.address(7), pipeline.address(8))
    send_id = pipeline.prepare(30)
    pipeline.start_worker()
    pipeline.start_beat()
    progress = pipeline.wait_finished(send_id)
    assert progress.counts == {"sent": 28, "failed": 2}
    counts = received_counts(smtp)
    assert pipeline.address(7) not in counts and len(counts) == 28

    from newsletter.store.db import session_scope
    from newsletter.audience.suppressions import is_suppressed

    with session_scope(pipeline.settings) as session:
        assert is_suppressed(session, pipeline.address(7))
        assert not is_suppressed(session, pipeline.address(9))


class OwnRedis:
    """A redis-server of this test's own, so it can be stopped and started."""

    def __init__(self, port: int):
        self.port = port
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        import shutil
        import subprocess

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def test_redis_restarted_mid_send_loses_nothing(tmp_path, postgres_url, smtp):
    from tests.conftest import free_port

    own = OwnRedis(free_port()).start()
    smtp.hold_after(15)  # the rest wait at the server: Redis goes mid-send
    pipeline = Pipeline(tmp_path, postgres_url, own.url, smtp, SMTP_TIMEOUT="600")
    try:
        send_id = pipeline.prepare(100, delay=0.5)
        pipeline.start_worker()
        pipeline.start_beat()
        pipeline.wait_for(lambda: len(smtp.messages) >= 15, what="the send to be under way")
        own.stop()  # every queued task is gone with it: it keeps nothing on disk
        own.start()
        smtp.release()
        progress = pipeline.wait_finished(send_id, timeout=180)
        requeued = requeued_batches(pipeline, send_id)
    finally:
        pipeline.stop_all()
        own.stop()
    counts = received_counts(smtp)
    assert set(counts) == {pipeline.address(n) for n in range(100)}
    assert sum(c - 1 for c in counts.values()) <= progress.possible_duplicates
    assert progress.counts == {"sent": 100}
    assert requeued, "the lost batch tasks should have been enqueued again"


def requeued_batches(pipeline, send_id) -> int:
    from sqlalchemy import func, select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Batch

    with session_scope(pipeline.settings) as session:
        return session.scalar(
            select(func.count()).select_from(Batch).where(Batch.send_id == send_id, Batch.times_enqueued > 1)
        )


def test_batch_tasks_delivered_again_through_the_broker_send_nothing_twice(pipeline, smtp):
    from sqlalchemy import func, select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Batch, BatchRun
    from workers.celery import make_app

    smtp.hold_after(5)  # the rest wait at the server until every task is sent again
    pipeline.env["SMTP_TIMEOUT"] = "600"  # a held reply is a slow server, not a lost line
    send_id = pipeline.prepare(60, delay=0.5)
    pipeline.start_worker()
    pipeline.start_beat()
    pipeline.wait_for(lambda: len(smtp.messages) >= 5, what="the send to be under way")

    def runs() -> int:
        with session_scope(pipeline.settings) as session:
            return session.scalar(select(func.count()).select_from(BatchRun).where(BatchRun.send_id == send_id))

    with session_scope(pipeline.settings) as session:
        batch_ids = session.scalars(select(Batch.id).where(Batch.send_id == send_id)).all()
    # Every batch task once more while the send runs, as a broker may redeliver it.
    app = make_app(pipeline.settings)
    for batch_id in batch_ids:
        app.send_task("workers.tasks.deliver_batch", args=[batch_id], queue="send")
    smtp.release()
    pipeline.wait_finished(send_id)
    pipeline.wait_for(lambda: runs() >= 2 * len(batch_ids), what="the repeated tasks to run")

    counts = received_counts(smtp)
    assert len(counts) == 60 and set(counts.values()) == {1}
