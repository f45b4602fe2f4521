"""What one answer from the transport means for its ledger row.

Pure: no database, no clock of its own. A batch run's record (``records.py``) locks
the rows it still holds, asks ``outcome`` about each answer, and writes what it
says in one statement. The rules:

- sent: ``sent``, at the database's time;
- an address this transport can never deliver to: ``failed``, and not held
  against the send's error budget (the address, not the send);
- slowed down (a throttle): ``retry`` after the pause the server asked for
  (or ``RATE_LIMIT_THROTTLE_SECONDS``), no attempt used and nothing against
  the error budget; once the retry window has run out, ``failed`` with the
  reason (``THROTTLED_TOO_LONG``);
- a temporary failure: ``retry`` after a backoff with jitter, until
  ``RETRY_ATTEMPTS`` tries or the retry window is spent, then ``failed``;
- a permanent one: ``failed``; a hard bounce also suppresses the address,
  a policy refusal (550 5.7.x: the sender or the content) never does.

A copy the server may have taken (``Result.uncertain``) that goes out again
is counted in ``extra_copies`` and flags the row ``possible_duplicate``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.store.models import DeliveryState, POLICY_REFUSAL
from newsletter.transports.base import SENT, TEMPORARY, Result

THROTTLED_TOO_LONG = "gave up: the server kept asking to slow down until the retry window (RETRY_WINDOW_SECONDS) ran out"
MAX_ERROR = 2000  # characters of a server's reply kept in last_error

# What a run counts each outcome as (BatchReport's fields).
SENT_COUNT, UNSENDABLE, EXPIRED, THROTTLED, RETRY, FAILED = "sent", "unsendable", "expired", "throttled", "retry", "failed"


@dataclass(frozen=True)
class Row:
    """What the run knows of a ledger row when its answer comes."""

    delivery_id: int
    attempts: int  # before this one
    possible_duplicate: bool  # as the row says now, locked: a taker's flag is never written over
    extra_copies: int
    message_id: str = ""


@dataclass(frozen=True)
class Outcome:
    values: dict  # the row's new columns, keyed as Deliverer's record statement takes them
    counted_as: str  # SENT_COUNT, UNSENDABLE, EXPIRED, THROTTLED, RETRY or FAILED
    against_budget: bool  # a failure the send's error budget counts
    suppress: bool  # a hard bounce: the address is suppressed


def outcome(result: Result, row: Row, *, now: datetime, window_end: datetime, settings: Settings) -> Outcome:
    """The row's new state for ``result``; ``window_end``: when its retry window runs out."""
    attempts = row.attempts + 1
    values = {
        "delivery_id": row.delivery_id,
        "attempts": attempts,
        "message_id": row.message_id,
        "last_error": result.error[:MAX_ERROR],
        "claimed_by": "",
        "possible_duplicate": row.possible_duplicate,
        "extra_copies": row.extra_copies,
        "updated_at": now,
        "provider_message_id": result.provider_message_id,
        "sent_at": None,
        "next_attempt_at": None,
    }
    if result.status == SENT:
        values.update(state=DeliveryState.SENT, sent_at=now)
        return Outcome(values, SENT_COUNT, False, False)
    if result.unsendable:
        values.update(state=DeliveryState.FAILED)
        return Outcome(values, UNSENDABLE, False, False)
    if result.throttled and now >= window_end:
        values.update(state=DeliveryState.FAILED, attempts=row.attempts,
                      last_error=f"{THROTTLED_TOO_LONG}: {result.error}"[:MAX_ERROR])
        return Outcome(values, EXPIRED, False, False)
    if result.throttled:
        pause = settings.rate_limit_throttle_seconds if result.retry_after is None else result.retry_after
        values.update(state=DeliveryState.RETRY, attempts=row.attempts, next_attempt_at=now + timedelta(seconds=pause),
                      possible_duplicate=row.possible_duplicate or result.uncertain,
                      extra_copies=row.extra_copies + result.uncertain)
        return Outcome(values, THROTTLED, False, False)
    if result.status == TEMPORARY:
        retry_at = now + retry_delay(settings, attempts)
        if result.uncertain:
            values["possible_duplicate"] = True
        if attempts >= settings.retry_attempts or retry_at > window_end:
            values.update(state=DeliveryState.FAILED, last_error=f"gave up after {attempts} attempts: {result.error}"[:MAX_ERROR])
            return Outcome(values, FAILED, True, False)
        # A copy the server may have taken goes out again: count it.
        values.update(state=DeliveryState.RETRY, next_attempt_at=retry_at, extra_copies=row.extra_copies + result.uncertain)
        return Outcome(values, RETRY, True, False)
    values.update(state=DeliveryState.FAILED)
    if result.policy_refusal:  # the sender or the content, not the address: never suppressed
        values["last_error"] = f"{POLICY_REFUSAL}: {result.error}"[:MAX_ERROR]
    return Outcome(values, FAILED, True, bool(result.hard_bounce))


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """Exponential backoff with jitter, so retries from many workers spread out."""
    base = settings.retry_base_delay_seconds * (2 ** max(0, attempts - 1))
    capped = min(base, 3600.0)
    return timedelta(seconds=capped * random.uniform(0.5, 1.5))
