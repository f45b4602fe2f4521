"""Rate limits that belong to a provider account, shared by every worker.

Providers state their limits per account, not per process, so the workers of
a send share one limit: in Redis when it is configured (workers on different
hosts agree because the scripts read Redis' own clock), or in memory in the
embedded mode, where every worker is a thread of one process.

An account (``AccountLimits``) has up to three limits, as providers impose
them: messages per second, and caps per hour and per day. Two publications
that name one account share its limits; two accounts never do. When the
provider says to slow down anyway (SMTP 421, HTTP 429), ``throttled()`` stops
the account in every worker until the provider's time is up, then resumes at
half the rate, which grows back to the configured rate while no more
throttling comes.

The algorithm is GCRA (the generic cell rate algorithm): the limit keeps one
number, the "theoretical arrival time" at which the next permit would be due if
permits were spread evenly. A request for n permits is granted when that time,
moved on by n intervals, is no more than ``burst`` intervals ahead of now. In
any stretch of time t this grants at most ``rate * t + burst`` permits.

The hourly and daily caps are rolling windows, counted in buckets of a
sixtieth of the window: a grant counts the buckets of the last window and the
one before them, so no stretch of an hour (or a day) ever holds more than the
cap, whether the provider counts by the clock or rolling.

``acquire(n)`` blocks until n permits are granted and returns the limiter's
clock (in seconds) at the moment of the grant. An account limiter waits at
most ``max_wait`` seconds; when its limits leave no room for longer (a daily
cap reached in the afternoon), it raises ``RateLimitDeferred`` instead, and
the caller gives its messages back until then. Before any wait it asks the
caller's ``should_wait`` (when given) whether waiting is worth a worker: if
not, it raises ``RateLimitYield``, having waited for nothing, and the caller
gives the worker to other work. A limiter whose ``limited`` is False (no
limit set) need not be asked at all.

This module is longer than the 450 lines the codebase aims for, on purpose:
the Redis scripts and the in-memory limiter are two implementations of one
algorithm, and they are kept side by side so that a change to one is read
beside the other.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import redis

from newsletter.errors import NewsletterError


class RateLimiterUnavailable(NewsletterError):
    """The shared limit cannot be consulted; the caller should retry later."""


class RateLimitYield(NewsletterError):
    """The limit has no room now, and the caller said not to wait for it
    (``should_wait``): other work can use the worker meanwhile."""

    def __init__(self, account: str, seconds: float):
        super().__init__(f"account {account!r}: no room for {seconds:.1f}s; other work goes first")
        self.account = account
        self.seconds = seconds


def _parts(n: int, burst: int) -> Iterator[int]:
    # More than a burst at once could never be granted; take it a burst at a time.
    if n < 0:
        raise ValueError(f"cannot acquire {n} permits")
    while n > 0:
        part = min(n, burst)
        yield part
        n -= part


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


# --- limits that belong to an account -----------------------------------------------

HOUR, DAY = 3600.0, 86400.0
BUCKETS = 60  # a window is counted in sixtieths: a minute of an hour, 24 minutes of a day
# After a throttle the account sends at half its rate (halved again by each
# new throttle, down to a sixteenth), then 0.5% of its rate more each second:
# from half to the full rate in 100 seconds without another throttle.
SLOWEST = 1 / 16
RECOVERY_PER_SECOND = 0.005


@dataclass(frozen=True)
class AccountLimits:
    account: str  # the provider account / relay login the limits belong to
    per_second: float = 0  # 0: no limit in that window
    per_hour: int = 0
    per_day: int = 0

    def __post_init__(self):
        if not self.account or not self.account.strip():
            raise ValueError("account: name the provider account or relay login the limits belong to")
        for name in ("per_second", "per_hour", "per_day"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} {value!r}: must be 0 (no limit) or a positive number")


class RateLimitDeferred(NewsletterError):
    """The account's limits leave no room for longer than a worker should wait.

    Not a failure: the caller gives its messages back to be tried again in
    ``seconds`` (a cap that is full, or a provider's long Retry-After).
    """

    def __init__(self, account: str, seconds: float, reason: str):
        super().__init__(f"account {account!r}: {reason}; the messages wait {seconds:.0f}s")
        self.account = account
        self.seconds = seconds
        self.reason = reason


def account_limits(settings) -> AccountLimits:
    """The limits of the account configured in the environment (RATE_LIMIT_*)."""
    return AccountLimits(
        settings.rate_limit_account or settings.transport,
        per_second=settings.rate_limit_per_second,
        per_hour=settings.rate_limit_per_hour,
        per_day=settings.rate_limit_per_day,
    )


def limiter_for(settings, limits: AccountLimits) -> AccountLimiter:
    """The limiter of ``limits.account``: in Redis when configured, else shared in this process."""
    options = dict(max_wait=settings.rate_limit_max_wait_seconds,
                   throttle_seconds=settings.rate_limit_throttle_seconds)
    if settings.redis_url:
        return RedisAccountLimiter(_shared_client(settings.redis_url), limits, **options)
    return LocalAccountLimiter(limits, **options)


class AccountLimiter:
    """``acquire``, ``throttled`` and the bookkeeping; each store implements
    ``_take`` (seconds to wait or 0 when granted, the clock, why) and ``_throttle``."""

    def __init__(self, limits: AccountLimits, *, max_wait: float = 60.0, throttle_seconds: float = 30.0,
                 hour: float = HOUR, day: float = DAY, sleep: Callable[[float], None] = time.sleep,
                 burst: int | None = None):
        self.limits = limits
        self.account = limits.account
        self.rate = float(limits.per_second)
        self.burst = _burst(limits.per_second, burst) if limits.per_second else 0
        self.max_wait = max_wait
        self.throttle_seconds = throttle_seconds
        self.windows = ((int(limits.per_hour), hour, "hour"), (int(limits.per_day), day, "day"))
        self.granted = 0
        self._sleep = sleep
        self._count_lock = threading.Lock()

    @property
    def limited(self) -> bool:
        """False when the account has no limit at all: there is nothing to ask."""
        return bool(self.rate or self.limits.per_hour or self.limits.per_day)

    def acquire(self, n: int = 1, should_wait: Callable[[float], bool] | None = None) -> float:
        """Block until n permits are granted in every window; return the clock at the grant.

        Raises RateLimitDeferred, having waited for nothing, when the wait
        would pass ``max_wait``, and RateLimitYield when ``should_wait(wait)``
        says not to wait (permits of an earlier part stay taken).
        """
        granted_at, waited, left = 0.0, 0.0, n
        for part in _parts(n, self._largest_part(n)):
            while True:
                wait, now, reason = self._take(part, left)
                if wait == 0:
                    granted_at = now
                    break
                if waited + wait > self.max_wait:
                    raise RateLimitDeferred(self.account, wait, self._why(reason))
                if should_wait is not None and not should_wait(wait):
                    raise RateLimitYield(self.account, wait)
                self._sleep(wait)
                waited += wait
            with self._count_lock:
                self.granted += part
            left -= part
        return granted_at

    def throttled(self, retry_after: float | None = None) -> None:
        """The provider said to slow down: nothing goes out for this account, in any
        worker, for ``retry_after`` seconds (or ``throttle_seconds``), then at a reduced rate."""
        pause = self.throttle_seconds if retry_after is None else max(0.0, float(retry_after))
        self._throttle(pause)

    def _largest_part(self, n: int) -> int:
        # More than a burst (or a cap) at once could never be granted.
        limits = [self.burst] + [cap for cap, _, _ in self.windows]
        return min([limit for limit in limits if limit > 0], default=max(n, 1))

    def _why(self, reason: str) -> str:
        if reason == "paused":
            return "the provider asked to slow down"
        if reason in ("hour", "day"):
            cap = self.limits.per_hour if reason == "hour" else self.limits.per_day
            return f"the cap of {cap} messages a {reason} is reached"
        return f"the limit of {self.rate:g} messages a second"

    def _take(self, n: int, wanted: int) -> tuple[float, float, str]:
        """Grant n now, if the caps have room for all ``wanted`` (n and the parts after it),
        so the first part of a chunk that will not fit does not use up the room."""
        raise NotImplementedError

    def _throttle(self, pause: float) -> None:
        raise NotImplementedError


# KEYS: the GCRA time (microseconds on Redis' clock), the hour's and the day's
# buckets (hashes: bucket number -> permits), the throttle (hash: until,
# factor, since). ARGV: permits asked, microseconds per permit (0: none),
# burst, hourly cap, hour length (us), daily cap, day length (us), buckets a
# window, recovery per microsecond, permits wanted in all (this part and
# the parts after it: the caps must have room for them). Returns {microseconds to wait (0:
# granted), Redis' clock in microseconds, which limit}.
_ACCOUNT_ACQUIRE = """
local asked, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local buckets, recovery, wanted = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function num(x) return string.format('%.17g', x) end

local throttle = redis.call('HMGET', KEYS[4], 'until', 'factor', 'since')
local paused_until = tonumber(throttle[1]) or 0
if paused_until > now then return {math.ceil(paused_until - now), now, 'paused'} end
local factor = 1
if throttle[2] then
  factor = math.min(1, tonumber(throttle[2]) + recovery * math.max(0, now - tonumber(throttle[3])))
end

local wait, why = 0, ''
local next_due, step
if interval > 0 then
  step = interval / factor
  local due = tonumber(redis.call('GET', KEYS[1])) or now
  if due < now then due = now end
  next_due = due + asked * step
  -- The burst is a second's worth at the full rate; slowed down, fewer fit in it.
  local w = next_due - math.max(burst * interval, asked * step) - now
  if w > 0.5 then wait, why = math.ceil(w), 'second' end -- half a microsecond: rounding
end

local function window(key, cap, length)
  local size = length / buckets
  local current = math.floor(now / size)
  local fields = {}
  for b = current - buckets, current do fields[#fields + 1] = num(b) end
  local counts = redis.call('HMGET', key, unpack(fields))
  local total = 0
  for i = 1, #counts do total = total + (tonumber(counts[i]) or 0) end
  local excess = total + math.min(wanted, cap) - cap
  if excess <= 0 then return 0, current, size end
  local freed = 0
  for i = 1, #counts do
    freed = freed + (tonumber(counts[i]) or 0)
    if freed >= excess then -- room once bucket i is out of the counted span
      return math.ceil((current + i) * size - now), current, size
    end
  end
  return math.ceil(length), current, size -- more than the cap at once: never (the caller splits)
end

local granted = {}
for k, spec in ipairs({{KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), 'hour'},
                       {KEYS[3], tonumber(ARGV[6]), tonumber(ARGV[7]), 'day'}}) do
  if spec[2] > 0 then
    local w, current, size = window(spec[1], spec[2], spec[3])
    if w > wait then wait, why = w, spec[4] end
    granted[#granted + 1] = {spec[1], current, size, spec[3]}
  end
end
if wait > 0 then return {wait, now, why} end

if interval > 0 then
  redis.call('SET', KEYS[1], num(next_due), 'PX', math.ceil((next_due - now) / 1000) + 1000)
end
for _, g in ipairs(granted) do
  local key, current, size, length = g[1], g[2], g[3], g[4]
  redis.call('HINCRBY', key, num(current), asked)
  redis.call('PEXPIRE', key, math.ceil((length + size) / 1000) + 1000)
  if redis.call('HLEN', key) > 2 * (buckets + 1) then -- forget buckets out of every span
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if tonumber(field) < current - buckets then redis.call('HDEL', key, field) end
    end
  end
end
return {0, now, ''}
"""

# KEYS: the GCRA time, the throttle hash. ARGV: the pause (us), microseconds
# per permit (0: none), burst, recovery per microsecond, the slowest factor.
# Reports of one throttle (other workers, the rest of a chunk) arrive while
# its pause lasts: they may lengthen it but do not halve the rate again.
_ACCOUNT_THROTTLE = """
local pause, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local recovery, slowest = tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function num(x) return string.format('%.17g', x) end
local state = redis.call('HMGET', KEYS[2], 'until', 'factor', 'since')
local old_until = tonumber(state[1]) or 0
local factor = 1
if state[2] then
  factor = math.min(1, tonumber(state[2]) + recovery * math.max(0, now - tonumber(state[3])))
end
if old_until <= now then factor = math.max(slowest, factor / 2) end
local resume = math.max(old_until, now + pause)
redis.call('HSET', KEYS[2], 'until', num(resume), 'factor', num(factor), 'since', num(resume))
redis.call('PEXPIRE', KEYS[2], math.ceil((resume - now + (1 - factor) / recovery) / 1000) + 1000)
if interval > 0 then -- no burst saved up over the pause: permits resume one by one
  local due = resume + math.max(burst * interval - interval / factor, 0)
  local current = tonumber(redis.call('GET', KEYS[1])) or 0
  if due > current then
    redis.call('SET', KEYS[1], num(due), 'PX', math.ceil((due - now) / 1000) + 1000)
  end
end
return 1
"""


class RedisAccountLimiter(AccountLimiter):
    """An account's limits in Redis, shared by every worker on every host."""

    def __init__(self, redis_client_or_url: redis.Redis | str, limits: AccountLimits, **options):
        super().__init__(limits, **options)
        self.prefix = f"newsletter:rate-limit:account:{limits.account}"
        self.keys = [f"{self.prefix}:{name}" for name in ("second", "hour", "day", "throttle")]
        self._client = _client(redis_client_or_url)
        self._acquire_script = self._client.register_script(_ACCOUNT_ACQUIRE)
        self._throttle_script = self._client.register_script(_ACCOUNT_THROTTLE)
        self._interval_us = repr(1_000_000 / self.rate) if self.rate else "0"
        (hour_cap, hour, _), (day_cap, day, _) = self.windows
        self._window_args = [hour_cap, repr(hour * 1e6), day_cap, repr(day * 1e6), BUCKETS,
                             repr(RECOVERY_PER_SECOND / 1e6)]

    def _take(self, n: int, wanted: int) -> tuple[float, float, str]:
        wait_us, now_us, why = self._call(self._acquire_script, self.keys,
                                          [n, self._interval_us, self.burst, *self._window_args, wanted])
        return wait_us / 1e6, now_us / 1e6, why.decode() if isinstance(why, bytes) else why

    def _throttle(self, pause: float) -> None:
        self._call(self._throttle_script, [self.keys[0], self.keys[3]],
                   [repr(pause * 1e6), self._interval_us, self.burst,
                    repr(RECOVERY_PER_SECOND / 1e6), repr(SLOWEST)])

    def _call(self, script, keys, args):
        try:
            return script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RateLimiterUnavailable(
                f"cannot reach Redis at {_where(self._client)} for the rate limits of account "
                f"{self.account!r} ({exc}): check REDIS_URL and that Redis is running; "
                "the messages will be tried again later"
            ) from exc


@dataclass
class _AccountState:
    """What the Redis keys hold, for the in-memory limiter."""

    due: float = -math.inf
    windows: dict[str, dict[int, int]] = field(default_factory=lambda: {"hour": {}, "day": {}})
    paused_until: float = -math.inf
    factor: float = 1.0
    since: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def factor_at(self, now: float) -> float:
        return min(1.0, self.factor + RECOVERY_PER_SECOND * max(0.0, now - self.since))


_local_accounts: dict[str, _AccountState] = {}
_local_accounts_lock = threading.Lock()


class LocalAccountLimiter(AccountLimiter):
    """An account's limits shared by the threads of one process (the embedded mode).

    Every limiter of one account in the process shares its state, as the
    Redis keys are shared; ``clock`` is for tests (a fake one moves only when
    the limiter sleeps).
    """

    def __init__(self, limits: AccountLimits, *, clock: Callable[[], float] = time.monotonic, **options):
        super().__init__(limits, **options)
        self._clock = clock
        with _local_accounts_lock:
            self._state = _local_accounts.setdefault(limits.account, _AccountState())

    def _take(self, n: int, wanted: int) -> tuple[float, float, str]:
        state = self._state
        with state.lock:
            now = self._clock()
            if state.paused_until > now:
                return state.paused_until - now, now, "paused"
            wait, why, next_due = 0.0, "", None
            if self.rate:
                step = 1.0 / (self.rate * state.factor_at(now))
                next_due = max(state.due, now) + n * step
                w = next_due - max(self.burst / self.rate, n * step) - now
                if w > 1e-9:  # anything less is rounding of the sums
                    wait, why = w, "second"
            buckets = []
            for cap, length, name in self.windows:
                if cap:
                    w, current = _window_wait(state.windows[name], cap, length, now, min(wanted, cap))
                    if w > wait:
                        wait, why = w, name
                    buckets.append((state.windows[name], current))
            if wait > 0:
                return wait, now, why
            if next_due is not None:
                state.due = next_due
            for counts, current in buckets:
                counts[current] = counts.get(current, 0) + n
                for old in [b for b in counts if b < current - BUCKETS]:
                    del counts[old]
            return 0.0, now, ""

    def _throttle(self, pause: float) -> None:
        state = self._state
        with state.lock:
            now = self._clock()
            factor = state.factor_at(now)
            if state.paused_until <= now:
                factor = max(SLOWEST, factor / 2)
            resume = max(state.paused_until, now + pause)
            state.paused_until, state.factor, state.since = resume, factor, resume
            if self.rate:  # no burst saved up over the pause: permits resume one by one
                state.due = max(state.due, resume + max(self.burst / self.rate - 1 / (self.rate * factor), 0.0))


def _window_wait(counts: dict[int, int], cap: int, length: float, now: float, n: int) -> tuple[float, int]:
    """(seconds until n more fit under ``cap`` in the rolling window, the current bucket)."""
    size = length / BUCKETS
    current = math.floor(now / size)
    span = range(current - BUCKETS, current + 1)
    excess = sum(counts.get(b, 0) for b in span) + n - cap
    if excess <= 0:
        return 0.0, current
    freed = 0
    for b in span:
        freed += counts.get(b, 0)
        if freed >= excess:  # room once bucket b is out of the counted span
            return (b + BUCKETS + 1) * size - now, current
    return length, current


@lru_cache(maxsize=None)
def _shared_client(url: str) -> redis.Redis:
    # One pool per URL in the process (redis-py makes a new one after a fork).
    return _client(url)
