"""Limits belong to the provider account: per second, per hour and per day,
shared by every worker of that account and by no other; a throttle pauses the
account everywhere, then it resumes slower and recovers.

Against Redis the grants are counted by Redis' own clock (what ``acquire``
returns), never by how long the test took; in memory a fake clock moves only
when the limiter sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis

from newsletter.config import settings_from
from newsletter.sending.ratelimit import (
    AccountLimits,
    LocalAccountLimiter,
    RateLimitDeferred,
    RateLimiterUnavailable,
    RedisAccountLimiter,
    account_limits,
    limiter_for,
)
from tests.smtp_server import free_loopback_port

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock that moves only when the limiter sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def assert_within_limit(grant_times: list[float], rate: float, burst: int) -> None:
    """In every stretch from the first grant to the k-th, at most rate * t + burst permits."""
    grant_times = sorted(grant_times)
    first = grant_times[0]
    for count, granted_at in enumerate(grant_times, start=1):
        allowed = burst + rate * (granted_at - first)
        assert count <= allowed + 1e-6, f"{count} permits by {granted_at - first:.4f}s, limit {allowed:.2f}"


def acquire_in_threads(limiters, permits_each: int) -> list[float]:
    grant_times: list[float] = []
    lock = threading.Lock()

    def worker(limiter):
        for _ in range(permits_each):
            granted_at = limiter.acquire()
            with lock:
                grant_times.append(granted_at)

    threads = [threading.Thread(target=worker, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return grant_times


def unique(name: str) -> str:
    """An account of this test's own: the in-memory limiters of one account share state."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def most_in_any_window(grant_times: list[float], length: float) -> int:
    """The most permits granted within any stretch of ``length`` seconds."""
    times = sorted(grant_times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= length:
            first += 1
        most = max(most, last - first + 1)
    return most


def local(limits: AccountLimits, clock: FakeClock, **options) -> LocalAccountLimiter:
    return LocalAccountLimiter(limits, clock=clock, sleep=clock.sleep, **options)


# -- Redis: shared by every worker of the account ------------------------------------

ACQUIRE_IN_A_PROCESS = """
import json, sys
from newsletter.config import settings_from
from newsletter.sending.ratelimit import AccountLimits, limiter_for
url, account, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = limiter_for(settings_from({"REDIS_URL": url}), AccountLimits(account, per_second=40))
print(json.dumps([limiter.acquire() for _ in range(count)]))
"""


@pytest.mark.slow
@pytest.mark.redis
def test_a_per_second_limit_holds_across_two_worker_processes(redis_url):
    account = unique("relay-login")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen([sys.executable, "-c", ACQUIRE_IN_A_PROCESS, redis_url, account, "60"],
                         stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    grant_times = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        grant_times += json.loads(out)

    assert len(grant_times) == 120
    assert_within_limit(grant_times, 40, 40)  # the burst is one second's worth
    assert most_in_any_window(grant_times, 1.0) <= 40 + 40  # a second's rate plus the burst, never more


@pytest.mark.redis
def test_an_hourly_cap_stops_at_the_cap_and_resumes_in_the_next_window(redis_url):
    # An "hour" of 1.2 seconds (a test hook), counted in sixtieths as a real one is.
    limiter = RedisAccountLimiter(redis_url, AccountLimits(unique("ses"), per_hour=10), hour=1.2, max_wait=30)

    grant_times = [limiter.acquire() for _ in range(15)]

    assert most_in_any_window(grant_times, 1.2) == 10
    first = grant_times[0]
    assert [t - first < 1.2 for t in grant_times].count(True) == 10  # the cap, then a wait for room
    assert grant_times[10] - first >= 1.2
    assert limiter.granted == 15


@pytest.mark.redis
def test_a_daily_cap_gives_the_work_back_instead_of_holding_a_worker(redis_url):
    limiter = RedisAccountLimiter(redis_url, AccountLimits(unique("sendgrid"), per_day=5), max_wait=60)
    limiter.acquire(5)

    with pytest.raises(RateLimitDeferred) as caught:
        limiter.acquire(1)

    wait = caught.value
    assert 23 * 3600 < wait.seconds <= 24 * 3600 + 24 * 60  # the next permit leaves the day's window
    assert "the cap of 5 messages a day is reached" in str(wait)
    assert limiter.granted == 5


@pytest.mark.redis
def test_the_same_account_in_two_limiters_shares_its_limits_and_two_accounts_never_do(redis_url):
    shared = unique("partnership-relay")
    trust, health = (RedisAccountLimiter(redis_url, AccountLimits(shared, per_hour=6), max_wait=0) for _ in range(2))
    other = RedisAccountLimiter(redis_url, AccountLimits(unique("neighbour-relay"), per_hour=6), max_wait=0)

    trust.acquire(4)
    with pytest.raises(RateLimitDeferred):
        health.acquire(3)  # 4 + 3 would pass the shared cap of 6
    health.acquire(2)
    other.acquire(6)

    assert (trust.granted, health.granted, other.granted) == (4, 2, 6)
    keys = redis.Redis.from_url(redis_url).keys(f"newsletter:rate-limit:account:{shared}:*")
    assert {k.decode().rsplit(":", 1)[1] for k in keys} == {"hour"}


@pytest.mark.redis
def test_two_workers_of_one_account_share_the_per_second_limit_and_a_third_account_is_free(redis_url):
    account = unique("smtp-login")
    workers = [RedisAccountLimiter(redis.Redis.from_url(redis_url), AccountLimits(account, per_second=100))
               for _ in range(2)]
    other = RedisAccountLimiter(redis_url, AccountLimits(unique("other"), per_second=100))

    grant_times = acquire_in_threads(workers, permits_each=40)

    assert_within_limit(grant_times, 100, 100)
    assert other.acquire(100) > 0  # its whole burst at once: nothing of the first account's counts
    assert other.granted == 100


@pytest.mark.redis
def test_a_throttle_stops_every_worker_of_the_account_then_it_resumes_at_half_the_rate(redis_url):
    account = unique("postmark")
    reporter, worker = (RedisAccountLimiter(redis_url, AccountLimits(account, per_second=20)) for _ in range(2))
    bystander_waits: list[float] = []
    bystander = RedisAccountLimiter(redis_url, AccountLimits(unique("mailgun"), per_second=20),
                                    sleep=bystander_waits.append)
    before = worker.acquire()

    reporter.throttled(retry_after=0.5)
    state = redis.Redis.from_url(redis_url).hgetall(f"newsletter:rate-limit:account:{account}:throttle")
    resume = float(state[b"until"]) / 1e6  # on Redis' clock
    bystander.acquire(20)  # another account: not slowed at all
    resumed = [worker.acquire() for _ in range(6)]

    assert bystander_waits == []
    assert resume - before >= 0.5
    assert resumed[0] >= resume
    # Not the burst of 20 at once: at half of 20 a second, a permit every
    # tenth of a second from the resume (recovering by 0.5% of the rate a second).
    assert resumed[5] - resume >= 5 * 0.095
    assert float(state[b"factor"]) == 0.5


@pytest.mark.redis
def test_reports_of_one_throttle_halve_the_rate_once_and_a_long_one_gives_the_work_back(redis_url):
    account = unique("ses-account")
    limiter = RedisAccountLimiter(redis_url, AccountLimits(account, per_second=10), max_wait=5)
    for _ in range(3):  # the rest of a chunk, other workers: the same throttle
        limiter.throttled(retry_after=600)

    with pytest.raises(RateLimitDeferred) as caught:
        limiter.acquire()

    assert 590 < caught.value.seconds <= 600
    assert "the provider asked to slow down" in str(caught.value)
    state = redis.Redis.from_url(redis_url).hgetall(f"newsletter:rate-limit:account:{account}:throttle")
    assert float(state[b"factor"]) == 0.5


@pytest.mark.redis
def test_a_throttle_without_a_retry_after_pauses_for_the_configured_time(redis_url):
    settings = settings_from({"REDIS_URL": redis_url, "RATE_LIMIT_THROTTLE_SECONDS": "45",
                              "RATE_LIMIT_MAX_WAIT_SECONDS": "1"})
    limiter = limiter_for(settings, AccountLimits(unique("relay")))  # no limits of its own: still slowed

    limiter.throttled()

    with pytest.raises(RateLimitDeferred) as caught:
        limiter.acquire()
    assert 40 < caught.value.seconds <= 45


def test_an_unreachable_redis_gives_a_clear_error_naming_the_account():
    port = free_loopback_port()
    limiter = RedisAccountLimiter(f"redis://:hunter2@127.0.0.1:{port}/3", AccountLimits("relay", per_hour=5))

    with pytest.raises(RateLimiterUnavailable) as caught:
        limiter.acquire()
    with pytest.raises(RateLimiterUnavailable):
        limiter.throttled()

    message = str(caught.value)
    assert f"127.0.0.1:{port}/3" in message and "'relay'" in message and "REDIS_URL" in message
    assert "hunter2" not in message


# -- in memory (the embedded mode) ---------------------------------------------------


def test_in_memory_an_hourly_cap_stops_at_the_cap_and_resumes_when_the_window_has_room():
    clock = FakeClock()
    limiter = local(AccountLimits(unique("relay"), per_second=10, per_hour=30), clock, max_wait=4000)

    grant_times = [limiter.acquire() for _ in range(70)]

    assert most_in_any_window(grant_times, 3600) == 30
    assert grant_times[29] == pytest.approx(1002.0)  # ten at once, then ten a second
    # The 31st waits until the first permits' sixtieth of the hour leaves the window.
    assert 3600 <= grant_times[30] - grant_times[0] <= 3600 + 60


def test_in_memory_a_daily_cap_gives_the_work_back_without_sleeping():
    clock = FakeClock()
    limiter = local(AccountLimits(unique("sendgrid"), per_day=100), clock)
    limiter.acquire(60)
    limiter.acquire(40)

    with pytest.raises(RateLimitDeferred) as caught:
        limiter.acquire(10)

    assert clock.slept == 0
    assert 86400 - 24 * 60 <= caught.value.seconds <= 86400 + 24 * 60
    clock.now += caught.value.seconds
    assert limiter.acquire(10) == clock.now  # room again


def test_in_memory_more_than_a_cap_at_once_is_taken_a_part_at_a_time():
    clock = FakeClock()
    limiter = local(AccountLimits(unique("mailgun"), per_second=100, per_hour=40), clock, max_wait=10_000)

    limiter.acquire(100)  # a chunk larger than the cap: 40 now, 40 and 20 in later windows

    assert limiter.granted == 100
    assert 2 * 3600 <= clock.slept <= 2 * 3660


def test_a_chunk_that_would_pass_the_cap_waits_whole_without_using_up_the_room():
    clock = FakeClock()
    limiter = local(AccountLimits(unique("relay"), per_second=5, per_hour=12), clock, max_wait=60)
    limiter.acquire(8)

    with pytest.raises(RateLimitDeferred):
        limiter.acquire(6)  # 8 + 6 > 12: nothing of it is taken
    limiter.acquire(4)  # so the last 4 still fit

    assert limiter.granted == 12


@pytest.mark.redis
def test_in_redis_a_chunk_that_would_pass_the_cap_waits_whole(redis_url):
    limiter = RedisAccountLimiter(redis_url, AccountLimits(unique("relay"), per_second=5, per_day=12), max_wait=60)
    limiter.acquire(8)

    with pytest.raises(RateLimitDeferred):
        limiter.acquire(6)
    limiter.acquire(4)

    assert limiter.granted == 12


def test_in_memory_one_account_is_shared_by_its_limiters_and_two_accounts_are_not():
    clock = FakeClock()
    account = unique("shared")
    first, second = (local(AccountLimits(account, per_hour=5), clock, max_wait=0) for _ in range(2))
    other = local(AccountLimits(unique("other"), per_hour=5), clock, max_wait=0)

    first.acquire(3)
    with pytest.raises(RateLimitDeferred):
        second.acquire(3)
    second.acquire(2)
    other.acquire(5)


def test_in_memory_a_throttle_pauses_halves_the_rate_and_the_rate_recovers():
    clock = FakeClock()
    limits = AccountLimits(unique("postmark"), per_second=10)
    limiter, other_worker = local(limits, clock), local(limits, clock)
    limiter.acquire(10)

    other_worker.throttled(retry_after=20)
    other_worker.throttled(retry_after=5)  # the same throttle, reported again: no shorter, no slower
    resumed = [limiter.acquire() for _ in range(3)]

    assert resumed[0] == pytest.approx(1020.0)
    assert resumed[1] - resumed[0] == pytest.approx(0.2, rel=0.01)  # five a second, not ten
    clock.now += 200  # 100 s from half to the whole rate without another throttle
    limiter.acquire(10)
    start = clock.now
    limiter.acquire(10)
    assert clock.now - start == pytest.approx(1.0)  # ten a second again

    limiter.throttled(retry_after=0)
    limiter.throttled(retry_after=0)  # a new throttle each time (the pause was over): a quarter
    quarter = [limiter.acquire() for _ in range(3)]
    assert [b - a for a, b in zip(quarter, quarter[1:])] == pytest.approx([0.4, 0.4], rel=0.03)


def test_throttles_never_slow_an_account_below_a_sixteenth_of_its_rate():
    clock = FakeClock()
    limiter = local(AccountLimits(unique("ses"), per_second=16), clock)
    for _ in range(10):
        limiter.throttled(retry_after=0)
        clock.now += 1e-6

    first, second = limiter.acquire(), limiter.acquire()

    assert 0.8 < second - first <= 1.0  # one a second at most (less as it recovers), not sixteen


# -- choosing one, and the limits ----------------------------------------------------


def test_embedded_mode_gives_an_in_memory_limiter_of_the_account():
    settings = settings_from({"RATE_LIMIT_PER_SECOND": "14", "RATE_LIMIT_PER_DAY": "5000",
                              "RATE_LIMIT_ACCOUNT": "ses:eu-west-1"})

    limiter = limiter_for(settings, account_limits(settings))

    assert isinstance(limiter, LocalAccountLimiter)
    assert limiter.account == "ses:eu-west-1"
    assert limiter.limits == AccountLimits("ses:eu-west-1", per_second=14, per_hour=0, per_day=5000)
    assert limiter.max_wait == 60 and limiter.throttle_seconds == 30


@pytest.mark.redis
def test_with_redis_configured_the_limits_live_in_redis_under_the_account(redis_url):
    settings = settings_from({"REDIS_URL": redis_url, "TRANSPORT": "smtp", "RATE_LIMIT_PER_HOUR": "100"})

    limiter = limiter_for(settings, account_limits(settings))
    limiter.acquire(2)

    assert isinstance(limiter, RedisAccountLimiter)
    assert limiter.account == "smtp"  # no RATE_LIMIT_ACCOUNT: the transport's name
    assert redis.Redis.from_url(redis_url).exists("newsletter:rate-limit:account:smtp:hour")


@pytest.mark.parametrize("limits, field", [
    (dict(account=""), "account"),
    (dict(account="relay", per_second=-1), "per_second"),
    (dict(account="relay", per_hour=float("nan")), "per_hour"),
    (dict(account="relay", per_day=-5), "per_day"),
])
def test_unusable_limits_are_refused_naming_the_field(limits, field):
    with pytest.raises(ValueError, match=field):
        AccountLimits(**limits)


@pytest.mark.parametrize("name", ["RATE_LIMIT_PER_HOUR", "RATE_LIMIT_MAX_WAIT_SECONDS"])
def test_negative_settings_are_refused_naming_the_variable(name):
    from newsletter.config import ConfigError

    with pytest.raises(ConfigError, match=name):
        settings_from({name: "-1"})
