"""Recording what the transport answered, in the ledger, for the rows a run still holds.

Each answer becomes its row's next state (``outcomes.py`` decides which:
sent, a retry, failed, a bounce, a throttle), written in one statement per
chunk. A hard bounce suppresses the address; a throttle slows the account
down for every worker; and each record adds to the send's error budget,
which pauses the send when too many of its messages fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.audience.suppressions import add_suppression
from newsletter.config import Settings
from newsletter.sending import outcomes
from newsletter.sending.chunk_sql import chunk_statements
from newsletter.sending.claims import Claimed
from newsletter.sending.lanes import Lane
from newsletter.sending.ratelimit import RateLimiterUnavailable
from newsletter.sending.send_record import pause_send
from newsletter.store import clock
from newsletter.store.lookups import among
from newsletter.store.models import Delivery, DeliveryState, RateLimitThrottle, Send
from newsletter.store.upsert import dialect_insert
from newsletter.transports.base import SENT, Envelope, Result

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What one run of a batch did, counted by outcome (the worker's log and heartbeat report it)."""

    batch_id: int
    holder: str = ""  # the run's lease holder, as its rows' claimed_by says
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retry: int = 0
    throttled: int = 0  # rows the provider asked to slow down for: retried, not failures
    deferred: int = 0  # rows given back until the account's limits have room
    held: int = 0  # rows given back, unsent, rather than wait for the account's limit while others need the worker
    skipped: int = 0
    released: int = 0
    taken_over: int = 0  # rows another worker took over while this run held them
    withdrawn: int = 0  # rows the transport did not hand over once the run had lost its lease
    expired: int = 0  # rows throttled until their retry window ran out: failed, not the recipients' fault
    unsendable: int = 0  # rows failed because their address can never go this way: not held against the error budget
    stopped: str = ""  # why the batch stopped early: paused, cancelled, claim lapsed
    errors: list[str] = field(default_factory=list)
    counted_attempts: int = 0  # results already added to the send's error-budget window
    counted_failures: int = 0


def record_results(session: Session, settings: Settings, send: Send, lane: Lane, holder: str, chunk: list[Claimed],
                   envelopes: list[Envelope], results: list[Result], unbuildable: list[Result], report: BatchReport) -> None:
    """Record each answer, for the rows this run still holds and for no other.

    The rows are locked first, so a takeover waits for the record (or the
    record sees the takeover), and ``possible_duplicate`` is read as it
    is now: a flag the taker set is never written over.
    """
    by_id = {c.delivery_id: c for c in chunk}
    answered = list(results) + unbuildable
    # The database's time comes with the locked rows: one round trip, not two.
    locked = session.execute(chunk_statements(session).lock_for_record,
                             {"ids": [r.delivery_id for r in answered], "holder": holder}).all()
    held = {row_id: (flagged, extra) for row_id, flagged, extra, _ in locked}
    now = locked[0][3] if locked else clock.read(session)
    if len(held) < len(answered):
        report.taken_over += len(answered) - len(held)
        log.warning(
            "%s row(s) of batch %s were taken over while being sent; the new holder counts them as possible duplicates",
            len(answered) - len(held), report.batch_id, extra={"batch_id": report.batch_id},
        )
        _uncount_copies_not_made(session, [r for r in results if r.delivery_id not in held])
    message_ids = {e.delivery_id: e.message_id for e in envelopes}
    updates, suppress, withdrawn = [], [], []
    window_end = (send.started_at or now) + timedelta(seconds=settings.retry_window_seconds)
    for result in answered:
        if result.delivery_id not in held:
            continue
        claimed = by_id[result.delivery_id]
        if result.withdrawn:  # never handed over: back as it was, for the next run
            withdrawn.append(claimed.delivery_id)
            continue
        flagged, extra = held[claimed.delivery_id]
        row = outcomes.Row(claimed.delivery_id, claimed.attempts, bool(flagged), extra,
                           message_ids.get(claimed.delivery_id, ""))
        decided = outcomes.outcome(result, row, now=now, window_end=window_end, settings=settings)
        updates.append(decided.values)
        setattr(report, decided.counted_as, getattr(report, decided.counted_as) + 1)
        if decided.against_budget:
            report.errors.append(result.error)
        if decided.suppress:
            suppress.append((claimed.email, result))
    if updates:
        # Core's executemany (one round trip on psycopg), not the ORM's bulk
        # update by primary key, which costs about as much again per row.
        session.execute(chunk_statements(session).record_result, updates)
    if withdrawn:
        report.withdrawn += session.execute(
            update(Delivery).where(Delivery.id.in_(withdrawn))
            .values(state=DeliveryState.PENDING, claimed_by="", updated_at=now)
        ).rowcount
    if not updates:
        return  # nothing answered: no progress
    # Rows held back untried after a throttle another chunk met only wait:
    # that chunk's record tells the limiter, once.
    throttles = [r for r in answered if r.throttled and not r.held_back]
    if throttles:
        _slow_down(session, lane, throttles, now)
    for email, result in suppress:
        add_suppression(session, email, "hard_bounce", f"send {send.id}: {result.code} {result.enhanced_code} {result.error}"[:200])
    attempts, failures = _count_for_error_budget(session, settings, send, report, now)
    _check_error_budget(session, settings, send.id, attempts, failures, report)


def _uncount_copies_not_made(session: Session, results: list[Result]) -> None:
    """Rows taken over while this run had them at the transport were counted by
    the taker as one copy more each (``extra_copies``): take back the count of
    those this run knows reached no one (withdrawn before they went out, or
    refused). A copy the server took, or may have, stays counted."""
    made_none = sorted(r.delivery_id for r in results if r.status != SENT and not r.uncertain)
    if not made_none:
        return
    locked = session.scalars(
        select(Delivery.id).where(among(session, Delivery.id, made_none), Delivery.extra_copies > 0)
        .order_by(Delivery.id).with_for_update()
    ).all()
    if locked:
        session.execute(
            update(Delivery).where(Delivery.id.in_(locked))
            .values(extra_copies=Delivery.extra_copies - 1, possible_duplicate=Delivery.extra_copies > 1)
        )
        log.info("%s row(s) taken over from this run never went out: each counts one copy less",
                 len(locked))


def _slow_down(session: Session, lane: Lane, throttles: list[Result], now: datetime) -> None:
    """Tell the account's limiter (every worker slows down) and count the event for /metrics."""
    waits = [r.retry_after for r in throttles if r.retry_after is not None]
    try:
        lane.limiter.throttled(max(waits) if waits else None)
    except RateLimiterUnavailable as exc:
        # The answers are recorded already and must stay so (some were
        # sent); the next acquire finds the limiter away and stops the run.
        log.warning("could not slow the account down: %s", exc)
    account = lane.account
    error = throttles[0].error[:2000]
    insert = dialect_insert(session, RateLimitThrottle).values(account=account, throttles=1, last_error=error,
                                                              last_at=now)
    session.execute(insert.on_conflict_do_update(
        index_elements=["account"],
        set_={"throttles": RateLimitThrottle.throttles + 1, "last_error": error, "last_at": now},
    ))
    log.warning("the provider asked account %s to slow down: %s", account, error)


def _count_for_error_budget(session: Session, settings: Settings, send: Send, report: BatchReport, now: datetime):
    """Add this record's results to the send's error-budget window; the window's counts.

    Counted on the send's row, which every worker's record updates anyway,
    so the budget sees the results of all of them as they arrive. The
    window starts again once it holds a batch's worth (or the minimum).
    """
    attempted = report.sent + report.failed + report.retry - report.counted_attempts
    failed = report.failed + report.retry - report.counted_failures
    report.counted_attempts += attempted
    report.counted_failures += failed
    return session.execute(chunk_statements(session).count_for_error_budget, {
        "send_id": send.id, "now": now, "attempted": attempted, "failed": failed,
        "window": max(settings.error_budget_minimum, send.batch_size),
    }).one()


def _check_error_budget(session: Session, settings: Settings, send_id: int, attempted: int, failures: int,
                        report: BatchReport) -> None:
    if attempted < settings.error_budget_minimum or failures < attempted * settings.error_budget_ratio:
        return
    common = max(set(report.errors), key=report.errors.count) if report.errors else ""
    pause_send(session, send_id, f"error budget exceeded: {failures} of {attempted} messages failed; "
                                       f"most common error: {common}")
