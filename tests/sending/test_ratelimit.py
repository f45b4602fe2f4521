from __future__ import annotations

import threading

import pytest

from newsletter.config import settings_from
from newsletter.sending.ratelimit import (
    LocalRateLimiter,
    NullRateLimiter,
    RateLimiterUnavailable,
    RedisRateLimiter,
    make_rate_limiter,
)
from tests.smtp_server import free_loopback_port


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


# -- Redis -------------------------------------------------------------------


@pytest.mark.redis
def test_two_workers_on_one_key_share_one_limit(redis_url):
    rate, burst = 100.0, 5
    workers = [RedisRateLimiter(redis_url, "newsletter:rate-limit:smtp", rate, burst=burst) for _ in range(2)]

    grant_times = acquire_in_threads(workers, permits_each=30)

    assert sum(w.granted for w in workers) == 60
    assert all(w.granted == 30 for w in workers)
    assert_within_limit(grant_times, rate, burst)


@pytest.mark.redis
def test_a_burst_is_granted_at_once_and_then_the_limit_holds(redis_url):
    limiter = RedisRateLimiter(redis_url, "newsletter:rate-limit:ses", 0.1, burst=3)

    assert limiter.try_acquire(3)
    assert not limiter.try_acquire(1)
    assert limiter.granted == 3


@pytest.mark.redis
def test_different_keys_are_independent(redis_url):
    smtp = RedisRateLimiter(redis_url, "newsletter:rate-limit:smtp", 0.1, burst=2)
    other = RedisRateLimiter(redis_url, "newsletter:rate-limit:other", 0.1, burst=2)

    assert smtp.try_acquire(2)
    assert not smtp.try_acquire(1)
    assert other.try_acquire(2)


@pytest.mark.redis
def test_a_client_object_works_as_well_as_a_url(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, "newsletter:rate-limit:smtp", 50, burst=4)

    assert limiter.acquire(10) > 0
    assert limiter.granted == 10
    client.close()


def test_an_unreachable_redis_gives_a_clear_error():
    port = free_loopback_port()
    limiter = RedisRateLimiter(f"redis://:hunter2@127.0.0.1:{port}/3", "newsletter:rate-limit:smtp", 10)

    with pytest.raises(RateLimiterUnavailable) as caught:
        limiter.acquire()

    message = str(caught.value)
    assert f"127.0.0.1:{port}/3" in message
    assert "REDIS_URL" in message
    assert "hunter2" not in message
    assert limiter.granted == 0


# -- in memory ---------------------------------------------------------------


def test_local_limiter_spreads_permits_after_the_burst():
    clock = FakeClock()
    limiter = LocalRateLimiter(10, burst=3, clock=clock, sleep=clock.sleep)

    grant_times = [limiter.acquire() for _ in range(13)]

    assert grant_times[:3] == [1000.0] * 3
    assert grant_times[-1] == pytest.approx(1001.0)  # ten more at ten a second
    assert_within_limit(grant_times, 10, 3)


def test_local_limiter_takes_more_than_a_burst_a_burst_at_a_time():
    clock = FakeClock()
    limiter = LocalRateLimiter(10, burst=3, clock=clock, sleep=clock.sleep)

    limiter.acquire(7)

    assert limiter.granted == 7
    assert clock.slept == pytest.approx(0.4)  # 3 at once, then 4 at a tenth of a second each


def test_local_limiter_is_shared_safely_by_threads():
    limiter = LocalRateLimiter(200, burst=4)

    grant_times = acquire_in_threads([limiter] * 3, permits_each=20)

    assert limiter.granted == 60
    assert_within_limit(grant_times, 200, 4)


def test_an_idle_limiter_saves_up_no_more_than_its_burst():
    clock = FakeClock()
    limiter = LocalRateLimiter(10, burst=2, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 3600  # an hour of quiet

    assert limiter.try_acquire(2)
    assert not limiter.try_acquire(1)


@pytest.mark.parametrize("rate, burst", [(0, None), (-1, None), (10, 0)])
def test_unusable_limits_are_refused(rate, burst):
    with pytest.raises(ValueError):
        LocalRateLimiter(rate, burst=burst)


# -- choosing one ------------------------------------------------------------


def test_no_rate_means_no_limit():
    limiter = make_rate_limiter(settings_from({}), "smtp")

    assert isinstance(limiter, NullRateLimiter)
    limiter.acquire(10_000)
    assert limiter.granted == 10_000


def test_embedded_mode_shares_one_local_limiter_per_name():
    settings = settings_from({"RATE_LIMIT_PER_SECOND": "14"})

    smtp = make_rate_limiter(settings, "smtp")

    assert isinstance(smtp, LocalRateLimiter)
    assert smtp.rate == 14
    assert make_rate_limiter(settings, "smtp") is smtp
    assert make_rate_limiter(settings, "ses") is not smtp


@pytest.mark.redis
def test_with_redis_configured_the_limit_lives_in_redis(redis_url):
    import redis

    settings = settings_from({"RATE_LIMIT_PER_SECOND": "5", "REDIS_URL": redis_url})

    limiter = make_rate_limiter(settings, "smtp")
    limiter.acquire(2)

    assert isinstance(limiter, RedisRateLimiter)
    assert redis.Redis.from_url(redis_url).exists(limiter.key)
