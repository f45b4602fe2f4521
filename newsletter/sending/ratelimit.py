"""One messages-per-second limit shared by every worker of a transport.

Providers state their limits per account, not per process, so the workers of
a send share one limit: in Redis when it is configured (workers on different
hosts agree because the script reads Redis' own clock), or in memory in the
embedded mode, where every worker is a thread of one process.

The algorithm is GCRA (the generic cell rate algorithm): the limit keeps one
number, the "theoretical arrival time" at which the next permit would be due if
permits were spread evenly. A request for n permits is granted when that time,
moved on by n intervals, is no more than ``burst`` intervals ahead of now. In
any stretch of time t this grants at most ``rate * t + burst`` permits.

``acquire(n)`` blocks until n permits are granted and returns the limiter's
clock (in seconds) at the moment of the grant.
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache
from typing import Callable, Iterator

import redis

from newsletter.errors import NewsletterError

# KEYS[1]: the theoretical arrival time, in microseconds on Redis' clock.
# ARGV: microseconds per permit, burst (permits), permits asked.
# Returns {1 granted or 0, microseconds to wait, Redis' clock in microseconds}.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local asked = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local due = tonumber(redis.call('GET', KEYS[1])) or now
if due < now then due = now end
local next_due = due + asked * interval
local wait = next_due - burst * interval - now
if wait > 0.5 then -- half a microsecond: rounding, not a real wait
  return {0, math.ceil(wait), now}
end
local keep_ms = math.ceil((next_due - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.17g', next_due), 'PX', keep_ms)
return {1, 0, now}
"""


class RateLimiterUnavailable(NewsletterError):
    """The shared limit cannot be consulted; the caller should retry later."""


class NullRateLimiter:
    """No limit (a rate of 0)."""

    rate = 0.0

    def __init__(self):
        self.granted = 0

    def acquire(self, n: int = 1) -> float:
        self.granted += n
        return time.monotonic()

    def try_acquire(self, n: int = 1) -> bool:
        self.granted += n
        return True


class _Gcra:
    """The algorithm on any clock, for the in-memory limiter."""

    def __init__(self, rate: float, burst: int):
        self.interval = 1.0 / rate
        self.burst = burst
        self.due = -math.inf

    def take(self, now: float, n: int) -> float:
        """Grant n permits and return 0, or return the seconds to wait first."""
        due = max(self.due, now)
        next_due = due + n * self.interval
        wait = next_due - self.burst * self.interval - now
        if wait > 1e-9:  # anything less is rounding of the sums, not a real wait
            return wait
        self.due = next_due
        return 0.0


class _BlockingLimiter:
    """acquire/try_acquire on top of ``_take``, which each limiter implements:
    (seconds to wait, or 0 when n permits were granted; the clock at that time)."""

    burst: int
    _sleep: Callable[[float], None] = staticmethod(time.sleep)

    def acquire(self, n: int = 1) -> float:
        """Block until n permits are granted; return the limiter's clock at the grant."""
        granted_at = 0.0
        for part in _parts(n, self.burst):
            granted_at = self._acquire_part(part)
        return granted_at

    def try_acquire(self, n: int = 1) -> bool:
        """Take n permits if they are free now, without waiting."""
        return n <= self.burst and self._take(n)[0] == 0

    def _acquire_part(self, n: int) -> float:
        while True:
            wait, now = self._take(n)
            if wait == 0:
                return now
            self._sleep(wait)

    def _take(self, n: int) -> tuple[float, float]:
        raise NotImplementedError


class LocalRateLimiter(_BlockingLimiter):
    """A limit shared by the threads of one process (the embedded mode)."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = _positive_rate(rate)
        self.burst = _burst(rate, burst)
        self.granted = 0
        self._gcra = _Gcra(rate, self.burst)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def _take(self, n: int) -> tuple[float, float]:
        with self._lock:
            now = self._clock()
            wait = self._gcra.take(now, n)
            if wait == 0:
                self.granted += n
            return wait, now


class RedisRateLimiter(_BlockingLimiter):
    """A limit shared through Redis by every worker on every host."""

    def __init__(self, redis_client_or_url: redis.Redis | str, key: str, rate_per_second: float,
                 burst: int | None = None):
        self.rate = _positive_rate(rate_per_second)
        self.burst = _burst(rate_per_second, burst)
        self.key = key
        self.granted = 0
        self._client = _client(redis_client_or_url)
        self._script = self._client.register_script(_GCRA_SCRIPT)
        self._interval_us = repr(1_000_000 / rate_per_second)
        self._count_lock = threading.Lock()

    def _take(self, n: int) -> tuple[float, float]:
        """(seconds to wait, or 0 when granted; Redis' clock in seconds)."""
        try:
            granted, wait_us, now_us = self._script(keys=[self.key], args=[self._interval_us, self.burst, n])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RateLimiterUnavailable(
                f"cannot reach Redis at {_where(self._client)} for the rate limit {self.key!r} ({exc}): "
                "check REDIS_URL and that Redis is running; the messages will be tried again later"
            ) from exc
        if granted:
            with self._count_lock:
                self.granted += n
            return 0.0, now_us / 1e6
        return wait_us / 1e6, now_us / 1e6


RateLimiter = NullRateLimiter | LocalRateLimiter | RedisRateLimiter


def make_rate_limiter(settings, name: str) -> RateLimiter:
    """The limit for ``name`` (a transport): Redis when configured, else in memory."""
    rate = settings.rate_limit_per_second
    if rate <= 0:
        return NullRateLimiter()
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, f"newsletter:rate-limit:{name}", rate)
    return _local_rate_limiter(name, rate)


@lru_cache(maxsize=None)
def _local_rate_limiter(name: str, rate: float) -> LocalRateLimiter:
    # One per name in the process, so every thread that sends shares it.
    return LocalRateLimiter(rate)


def _parts(n: int, burst: int) -> Iterator[int]:
    # More than a burst at once could never be granted; take it a burst at a time.
    if n < 0:
        raise ValueError(f"cannot acquire {n} permits")
    while n > 0:
        part = min(n, burst)
        yield part
        n -= part


def _positive_rate(rate: float) -> float:
    if not rate > 0:
        raise ValueError(f"rate {rate!r}: must be more than 0 (use NullRateLimiter for no limit)")
    return float(rate)


def _burst(rate: float, burst: int | None) -> int:
    # By default, one second's worth: providers state their limits per second.
    if burst is None:
        return max(1, math.ceil(rate))
    if burst < 1:
        raise ValueError(f"burst {burst!r}: must be at least 1")
    return int(burst)


def _client(redis_client_or_url: redis.Redis | str) -> redis.Redis:
    if isinstance(redis_client_or_url, str):
        # Short timeouts: an unreachable Redis should fail a batch, not hang it.
        return redis.Redis.from_url(redis_client_or_url, socket_connect_timeout=5, socket_timeout=5)
    return redis_client_or_url


def _where(client: redis.Redis) -> str:
    # Host, port and database only: the URL may carry a password.
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"{options['path']} (database {options.get('db', 0)})"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"
