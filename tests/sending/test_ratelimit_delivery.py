"""Throttling slows a send, never fails it: an SMTP server that says "too many
messages", a provider that answers 429, and an account whose daily cap is
reached, through the real delivery code, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from newsletter.sending import delivery, lifecycle, scheduling
from newsletter.sending.ratelimit import AccountLimits, limiter_for
from newsletter.store.models import Delivery, RateLimitThrottle, Send, SendEvent, utcnow
from newsletter.transports.postmark import PostmarkTransport
from newsletter.transports.smtp import SmtpTransport
from newsletter.web import create_app
from tests.fake_providers import POSTMARK_TOKEN, postmark_server  # noqa: F401 (a fixture)
from tests.beat_and_workers import Workers
from tests.scripted_smtp import ScriptedSmtpServer
from tests.sending.world import make_world, states
from tests.smtp_server import smtp_server  # noqa: F401 (a fixture)


def strict(settings, **changes):
    """Settings under which a throttle counted as a failure would show: one attempt
    only, and an error budget that pauses a send at the first failures."""
    strict = dict(retry_attempts=1, error_budget_ratio=0.2, error_budget_minimum=2, retry_base_delay_seconds=0.0,
                  batch_size=10, smtp_connections=1)
    return replace(settings, **{**strict, **changes})


def deliver_until_done(session, settings, deliverer, send_id, rounds=600):
    """Ticks and batches as beat and workers run them, until the send is no longer sending.

    Waits a little between rounds for retries to come due; the bound is on
    rounds, so a send that never finishes fails the test instead of hanging it.
    """
    for _ in range(rounds):
        for batch_id in lifecycle.tick(session, settings):
            deliverer.deliver_batch(session, batch_id)
        session.expire_all()
        if session.get(Send, send_id).state != "sending":
            return
        time.sleep(0.05)
    raise AssertionError(f"send {send_id} did not finish: {lifecycle.summary_line(lifecycle.progress(session, send_id))}")


def throttle_metric(session, settings) -> dict[str, float]:
    """newsletter_rate_limit_throttles_total by account, as /metrics shows it."""
    session.commit()  # SQLite: the scrape reads through a connection of its own
    response = create_app(settings).test_client().get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    return {
        s.labels["account"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "newsletter_rate_limit_throttles_total"
    }


def schedule(session, settings, count):
    _, mailing_list, issue = make_world(session, count)
    send = scheduling.schedule_send(session, issue, mailing_list, None, batch_size=settings.batch_size)
    session.commit()
    return send.id


@pytest.mark.redis
def test_a_server_saying_too_many_messages_for_a_while_slows_the_send_and_fails_nothing(
    session, settings, redis_url, smtp_server
):
    fast = strict(settings, redis_url=redis_url, rate_limit_throttle_seconds=0.2)
    account = f"relay-{uuid.uuid4().hex[:8]}"
    send_id = schedule(session, fast, 20)
    smtp_server.fail_next(4, "421 4.7.0 Too many messages, slow down", at="mail")
    transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none", connections=1, timeout=5)
    limiter = limiter_for(fast, AccountLimits(account, per_second=800))  # halved four times, still quick

    with transport:
        deliver_until_done(session, fast, delivery.Deliverer(fast, transport, limiter), send_id)

    assert session.get(Send, send_id).state == "finished"  # the error budget did not pause it
    assert states(session, send_id) == {"sent": 20}
    rows = session.scalars(select(Delivery).where(Delivery.send_id == send_id)).all()
    assert {r.attempts for r in rows} == {1}  # waiting for the server used no attempt
    received = sorted(m.recipients[0] for m in smtp_server.messages)
    assert received == [f"reader{i:03d}@example.com" for i in range(20)]  # each once
    kinds = session.scalars(select(SendEvent.kind).where(SendEvent.send_id == send_id)).all()
    assert "paused" not in kinds
    # Each 421 held back the rest of its chunk: one throttle per chunk that met one.
    assert throttle_metric(session, fast) == {account: 4}
    assert "421 4.7.0 Too many messages" in session.get(RateLimitThrottle, account).last_error
    state = redis.Redis.from_url(redis_url).hgetall(f"newsletter:rate-limit:account:{account}:throttle")
    assert float(state[b"factor"]) < 1  # the account came back slower


def test_a_provider_answering_429_with_retry_after_is_waited_for(session, settings, postmark_server):
    fast = strict(settings, rate_limit_throttle_seconds=30)  # the provider's Retry-After wins
    account = f"postmark-{uuid.uuid4().hex[:8]}"
    send_id = schedule(session, fast, 12)
    postmark_server.throttle(times=1, retry_after="1")
    limiter = limiter_for(fast, AccountLimits(account, per_second=100))  # in memory: no REDIS_URL

    started = time.monotonic()
    with PostmarkTransport(POSTMARK_TOKEN, api_url=postmark_server.url) as transport:
        deliverer = delivery.Deliverer(fast, transport, limiter)
        deliver_until_done(session, fast, deliverer, send_id)

    assert session.get(Send, send_id).state == "finished"
    assert states(session, send_id) == {"sent": 12}
    assert {r.attempts for r in session.scalars(select(Delivery).where(Delivery.send_id == send_id))} == {1}
    assert sorted(d.to_email for d in postmark_server.delivered) == [f"reader{i:03d}@example.com" for i in range(12)]
    assert throttle_metric(session, fast) == {account: 1}
    # The provider asked for a second: nothing went out sooner (by the provider's own clock).
    assert len(postmark_server.calls) >= 2 and min(postmark_server.delivered_at) - started >= 1.0


def test_a_full_daily_cap_gives_the_rows_back_until_it_has_room(session, settings):
    from tests.memory_transport import MemoryTransport

    fast = strict(settings, batch_size=40)
    send_id = schedule(session, fast, 40)
    limiter = limiter_for(fast, AccountLimits(f"ses-{uuid.uuid4().hex[:8]}", per_day=30))
    deliverer = delivery.Deliverer(fast, MemoryTransport(), limiter)  # chunks of 25
    (batch_id,) = lifecycle.tick(session, fast)

    started = utcnow()
    report = deliverer.deliver_batch(session, batch_id)

    session.expire_all()
    # 25 went out; the next chunk of 15 would pass the cap of 30: it waits, whole.
    assert (report.sent, report.deferred, report.failed, report.stopped) == (25, 15, 0, "waiting for the rate limit")
    assert session.get(Send, send_id).state == "sending"  # not paused, not failed: waiting
    waiting = session.scalars(select(Delivery).where(Delivery.send_id == send_id, Delivery.state == "retry")).all()
    assert len(waiting) == 15
    assert {r.attempts for r in waiting} == {0}
    assert all(r.claimed_by == "" and "cap of 30 messages a day" in r.last_error for r in waiting)
    assert all(started + timedelta(hours=23) < r.next_attempt_at < started + timedelta(hours=25) for r in waiting)
    assert lifecycle.tick(session, fast, utcnow() + timedelta(minutes=5)) == []  # nothing to do for now
    assert lifecycle.tick(session, fast, utcnow() + timedelta(hours=25)) == [batch_id]


def rows_by_state(session, send_id) -> dict[str, int]:
    session.expire_all()
    return states(session, send_id)


def test_a_421_in_a_stream_with_the_next_chunk_handed_over_slows_the_send_and_loses_nothing(session, settings):
    # Chunks of 25 over one streamed (BDAT) connection: the next chunk is handed
    # over before the last is answered. The second message meets a 421; those
    # streamed behind it and the chunk out with it come back untried.
    fast = strict(settings, batch_size=60, rate_limit_throttle_seconds=0.2)
    account = f"relay-{uuid.uuid4().hex[:8]}"
    send_id = schedule(session, fast, 60)
    limiter = limiter_for(fast, AccountLimits(account, per_second=500))  # in memory: no REDIS_URL
    with ScriptedSmtpServer(chunking=True, final_421=(2,)) as server:
        with SmtpTransport("127.0.0.1", server.port, security="none", connections=1, timeout=5) as transport:
            deliverer = delivery.Deliverer(fast, transport, limiter)
            (batch_id,) = lifecycle.tick(session, fast)
            report = deliverer.deliver_batch(session, batch_id)

            # Nothing is left claimed or sending; what the 421 held back waits as a retry.
            counts = rows_by_state(session, send_id)
            assert set(counts) <= {"sent", "retry"} and sum(counts.values()) == 60
            assert report.throttled == counts["retry"] and report.failed == report.retry == 0
            assert report.throttled >= 24  # the 421'd message and at least the rest of its chunk
            deliver_until_done(session, fast, deliverer, send_id)

        assert session.get(Send, send_id).state == "finished"
        assert states(session, send_id) == {"sent": 60}
        assert {r.attempts for r in session.scalars(select(Delivery).where(Delivery.send_id == send_id))} == {1}
        taken = sorted(m.recipients[0] for m in server.messages if m.accepted)
        assert taken == [f"reader{i:03d}@example.com" for i in range(60)]  # each once
        assert any(m.connection == 1 and not m.accepted for m in server.messages)
    assert throttle_metric(session, fast) == {account: 1}  # one throttle, met once: held-back rows add none


def test_a_full_cap_with_a_chunk_in_flight_records_it_and_gives_the_rest_back(session, settings, smtp_server):
    fast = strict(settings, batch_size=60)
    send_id = schedule(session, fast, 60)
    limiter = limiter_for(fast, AccountLimits(f"relay-{uuid.uuid4().hex[:8]}", per_day=30))
    transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none", connections=1, timeout=5)
    with transport:
        (batch_id,) = lifecycle.tick(session, fast)
        report = delivery.Deliverer(fast, transport, limiter).deliver_batch(session, batch_id)

    # The first chunk of 25 was out when the second would have passed the cap:
    # it was answered and recorded, and only the rows still claimed went back.
    assert (report.sent, report.deferred, report.stopped) == (25, 35, "waiting for the rate limit")
    assert rows_by_state(session, send_id) == {"sent": 25, "retry": 35}
    assert len(smtp_server.messages) == 25
    waiting = session.scalars(select(Delivery).where(Delivery.send_id == send_id, Delivery.state == "retry")).all()
    assert {(r.attempts, r.claimed_by, r.possible_duplicate) for r in waiting} == {(0, "", False)}


# --- fair workers: a send waiting for its account's limit holds no worker ----------------


def add_publication(session, slug, count, sending=None):
    """A publication with one list of ``count`` confirmed people and an issue; (list, issue)."""
    from tests.sending.world import make_world

    _, mailing_list, issue = make_world(session, count, slug=slug, name=slug.title(), sending=sending, reader=slug,
                                        digits=4)
    return mailing_list, issue


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_send_waiting_for_its_accounts_limit_leaves_the_workers_to_a_send_that_can_go_now(
    session, settings, redis_url, smtp_server
):
    # A: its account limited to 10 a second, 1,000 people (100 s of sending);
    # B: no limit, 300 people. Scheduled in the same second, A first: its ten
    # batches are ahead of B's three in the queue of two workers.
    fair = replace(settings, redis_url=redis_url, transport="smtp", smtp_host=smtp_server.host,
                   smtp_port=smtp_server.port, smtp_security="none", smtp_connections=2, smtp_timeout=10,
                   batch_size=100)
    account = f"limited-{uuid.uuid4().hex[:8]}"
    list_a, issue_a = add_publication(session, "alpha", 1000, {"per_second": 10, "account": account})
    list_b, issue_b = add_publication(session, "beta", 300)
    send_a = scheduling.schedule_send(session, issue_a, list_a, None, batch_size=fair.batch_size)
    session.commit()
    send_b = scheduling.schedule_send(session, issue_b, list_b, None, batch_size=fair.batch_size)
    session.commit()
    send_a, send_b = send_a.id, send_b.id

    with Workers(fair, count=2) as workers:
        deadline = time.monotonic() + 45  # the issue's bound; alone, B takes a second or two
        while time.monotonic() < deadline and not workers.errors:
            session.expire_all()
            if session.get(Send, send_b).state == "finished":
                break
            time.sleep(0.2)
        session.expire_all()
        b_state, a_progress = session.get(Send, send_b).state, lifecycle.progress(session, send_a)
        scheduling.cancel(session, send_a)
        session.commit()
    assert not workers.errors, workers.errors

    assert b_state == "finished", lifecycle.summary_line(lifecycle.progress(session, send_b))
    assert states(session, send_b) == {"sent": 300}
    received_b = sorted(r for m in smtp_server.messages for r in m.recipients if r.startswith("beta"))
    assert received_b == [f"beta{i:04d}@example.com" for i in range(300)]  # each once
    assert a_progress.counts.get("sent", 0) > 0  # A went on meanwhile, at its own pace
    # Nothing of A was lost or doubled on the way: whatever was not sent is cancelled.
    received_a = [r for m in smtp_server.messages for r in m.recipients if r.startswith("alpha")]
    assert len(received_a) == len(set(received_a)) == states(session, send_a).get("sent", 0)
    assert set(states(session, send_a)) <= {"sent", "cancelled"}
    assert lifecycle.progress(session, send_a).possible_duplicates == 0


# --- the shared limiter's Redis away ---------------------------------------------------


class OwnRedis:
    """A redis-server of this test's own on a free port, to stop and start again."""

    def __init__(self):
        import shutil

        from tests.conftest import free_port

        self.port, self.binary, self.process = free_port(), shutil.which("redis-server"), None
        if self.binary is None:
            pytest.fail("redis-server is not installed")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "OwnRedis":
        import subprocess

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def test_an_account_with_no_limit_sends_without_asking_the_limiter(session, settings):
    from tests.conftest import free_port
    from tests.memory_transport import MemoryTransport

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    fast = strict(settings, redis_url=nowhere, batch_size=20)
    send_id = schedule(session, fast, 20)
    transport = MemoryTransport()

    deliver_until_done(session, fast, delivery.Deliverer(fast, transport), send_id)

    assert session.get(Send, send_id).state == "finished"
    assert states(session, send_id) == {"sent": 20}
    assert sorted(transport.recipients()) == [f"reader{i:03d}@example.com" for i in range(20)]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_limiters_redis_going_away_mid_batch_sends_nothing_twice(session, settings, smtp_server):
    own = OwnRedis().start()
    try:
        fast = strict(settings, redis_url=own.url, batch_size=75)
        send_id = schedule(session, fast, 75)
        # 25 a second, a burst of 25: chunks of 25, the second waits a second for room.
        limiter = limiter_for(fast, AccountLimits(f"relay-{uuid.uuid4().hex[:8]}", per_second=25))
        transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none", connections=1, timeout=10)
        smtp_server.hold(1)  # the first chunk stays at the server, unanswered, while Redis goes
        deliverer = delivery.Deliverer(fast, transport, limiter)
        (batch_id,) = lifecycle.tick(session, fast)
        outcome: dict = {}

        def run():
            try:
                outcome["report"] = deliverer.deliver_batch(session, batch_id)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        for _ in range(600):
            if smtp_server.held:
                break
            time.sleep(0.01)
        own.stop()
        smtp_server.release()
        worker.join(timeout=60)

        # What was handed over is answered and recorded; the rest waits, unsent and unflagged.
        assert "error" not in outcome, outcome
        assert outcome["report"].stopped == "rate limiter unavailable"
        counts = rows_by_state(session, send_id)
        assert set(counts) == {"sent", "pending"} and counts["sent"] == len(smtp_server.messages) >= 25
        assert lifecycle.progress(session, send_id).possible_duplicates == 0

        own.start()
        with transport:
            deliver_until_done(session, fast, deliverer, send_id)
    finally:
        own.stop()

    assert states(session, send_id) == {"sent": 75}
    received = sorted(r for m in smtp_server.messages for r in m.recipients)
    assert received == [f"reader{i:03d}@example.com" for i in range(75)]  # each once
    assert lifecycle.progress(session, send_id).possible_duplicates == 0
