"""Delivering one batch: claim its ledger rows, personalise each message, hand
it to the transport, record each recipient's result.

A run holds the rows it claims under a lease (newsletter/sending/leases.py) and
changes only rows it still holds. A row left in ``sending`` by a run that
died, or lost its lease, may or may not have reached the server. It is sent
again (none lost) and flagged ``possible_duplicate`` (counted, never hidden).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from newsletter.config import ConfigError, Settings
from newsletter.sending.chunk_sql import chunk_statements
from newsletter.sending import outcomes
from newsletter.sending.lanes import Lane, Lanes
from newsletter.sending.leases import Lease, holder_is_gone, process_identity, unheld
from newsletter.authoring.message import UnsendableAddress
from newsletter.sending.ratelimit import RateLimitDeferred, RateLimiterUnavailable, RateLimitYield
from newsletter.sending.scheduling import list_ids_of, record_send_event
from newsletter.sending.send_template import SendTemplate
from newsletter.store import clock
from newsletter.store.lookups import among
from newsletter.store.models import (
    Batch,
    Delivery,
    Membership,
    RateLimitThrottle,
    Send,
    Subscriber,
    utcnow,
)
from newsletter.errors import InputError
from newsletter.transports.base import PERMANENT, SENT, Envelope, Result, Transport

from newsletter.sending.lifecycle import ACTIVE_ROW_STATES, others_need_the_worker
from newsletter.store.upsert import dialect_insert
from newsletter.audience.suppressions import add_suppression, suppressed_addresses

log = logging.getLogger(__name__)


# --- delivering a batch --------------------------------------------------------------


@dataclass
class BatchReport:
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


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int | None
    email: str
    name: str
    attempts: int
    possible_duplicate: bool


# Failures that pass: the database or the shared limiter was away for a moment.
# The run gives its rows back and the batch is handed out again (by the beat,
# or, when the database was away, by the task retrying itself). Anything else
# would fail the same way on every worker: the send is paused instead.
DATABASE_AWAY = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
TRANSIENT_FAILURES = (*DATABASE_AWAY, RateLimiterUnavailable)
SEND_TIME_FAILURE = "stopped at send time"


class _SendStopped(Exception):
    """The send is no longer sending (paused or cancelled): hand nothing more over."""

    def __init__(self, state: str):
        super().__init__(state)
        self.state = state


class _HandOver:
    """The chunks of one run at the transport, recorded in the order they went out.

    A transport that takes a call while another is out (``concurrent_calls``:
    SMTP, whose connections share one queue of work) is given the next chunk as
    soon as it is ready, before the last one is answered: its connections go
    from one chunk to the next without waiting for the slowest, and the ledger
    work of one chunk is done while the other is on the wire. Any other
    transport is called and recorded a chunk at a time, as before.
    """

    def __init__(self, deliverer: Deliverer, session: Session, send: Send, lease: Lease, report: BatchReport,
                 transport: Transport):
        self._deliverer, self._session, self._send, self._lease, self._report = deliverer, session, send, lease, report
        self._transport = transport  # the lane's: the send's publication's transport
        self._ahead = 1 if transport.concurrent_calls else 0
        self._out: deque = deque()  # (chunk, envelopes, unbuildable, future of the results)

    def send(self, chunk: list[Claimed], envelopes: list[Envelope], unbuildable: list[Result]) -> None:
        call = self._transport.send_many
        if self._transport.withdraws and envelopes:
            # Asked before each message goes out: a run that lost its lease hands over no more.
            call = partial(self._transport.send_many, may_hand_over=self._lease.may_hand_over)
        if self._ahead and envelopes:
            results = self._deliverer._calls().submit(call, envelopes)
        else:
            results = Future()
            results.set_result(call(envelopes) if envelopes else [])
        self._out.append((chunk, envelopes, unbuildable, results))
        self.record(keep=self._ahead)

    def record_answered(self) -> int:
        """Record, without waiting, the chunks out (oldest first) that are answered; how many.
        A call that failed is left for ``record``, where the failure stops the run as before."""
        recorded = 0
        while self._out and self._out[0][3].done() and self._out[0][3].exception() is None:
            self.record(keep=len(self._out) - 1)
            recorded += 1
        return recorded

    def record(self, keep: int = 0) -> None:
        """Record the answers of all but the ``keep`` newest chunks out, waiting for them."""
        while len(self._out) > keep:
            chunk, envelopes, unbuildable, results = self._out.popleft()
            answers = results.result()
            self._lease.progressed()
            self._deliverer._record_results(self._session, self._send, self._lease.holder, chunk, envelopes,
                                            answers, unbuildable, self._report)

    def wait(self) -> None:
        """After a failure: let what is out finish (its rows stay in doubt, and are given back as such)."""
        for _, _, _, results in self._out:
            try:
                results.result()
            except Exception:  # noqa: BLE001 - the failure that got here is the one to report
                pass
        self._out.clear()


class Deliverer:
    """Delivers batches for one worker process: one transport, one limiter,
    compiled issues cached. Each run holds its rows under a lease of its own
    (newsletter/sending/leases.py), named after this process."""

    def __init__(self, settings: Settings, transport: Transport | None = None, limiter=None,
                 identity: str | None = None):
        self.settings = settings
        # One lane per publication (its transport, account limiter, DKIM keys);
        # ``transport`` and ``limiter`` are the worker's, for publications that set none.
        self.lanes = Lanes(settings, transport, limiter)
        self._identity = identity
        self._templates: dict[int, SendTemplate] = {}
        self._pool: ThreadPoolExecutor | None = None  # calls to a transport that takes them concurrently

    def _calls(self) -> ThreadPoolExecutor:
        # Made when first needed, in the process that sends (not before a fork).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="handover")
        return self._pool

    @property
    def transport(self) -> Transport:
        """The worker's own transport (publications that set none use it)."""
        return self.lanes.worker_transport

    def close(self) -> None:
        """Close every transport this worker opened."""
        self.lanes.close()

    @property
    def identity(self) -> str:
        # Asked for at each run, not kept: a Deliverer made before a fork must
        # not lend its parent's name to the children.
        return self._identity or process_identity()

    # The chunk is what is in flight at once: claimed rows are marked
    # "sending" a chunk at a time, so a crash leaves at most one chunk in doubt
    # (two with a transport that takes the next chunk before the last one is
    # answered, see _HandOver). A provider API takes its own batch size; over
    # SMTP, 25 a connection: each chunk costs two commits and a ledger update;
    # at 10 a worker sent ~12% fewer. Under a rate limit, no more at once than
    # the limit lets through at once, so that it holds where it counts: at the server.
    # Over SMTP no more than CHUNK_BYTES of messages either: two chunks are out at
    # once, each message built in full and dot-stuffed, so 10 connections of 25
    # messages of 72 KiB held some 70 MiB; 8 MiB a chunk sent as fast (bench/README.md).
    CHUNK_BYTES = 8 * 1024 * 1024

    @staticmethod
    def chunk_size(lane: Lane, message_bytes: int = 0) -> int:
        size = lane.transport.preferred_chunk  # a provider's batch call: its own size
        if not size:
            size = max(10, lane.settings.smtp_connections * 25)
            if message_bytes:
                size = max(10, min(size, Deliverer.CHUNK_BYTES // message_bytes))
        burst = getattr(lane.limiter, "burst", 0)
        return min(size, burst) if burst else size

    def deliver_batch(self, session: Session, batch_id: int, now: datetime | None = None) -> BatchReport:
        """Send what is unfinished in one batch. Commits as it goes, chunk by chunk.

        If anything raises, the rows this run holds are given back before the
        exception goes on (see ``_give_back``).
        """
        report = BatchReport(batch_id)
        batch = session.get(Batch, batch_id)
        if batch is None:
            report.stopped = "no such batch"
            return report
        send = session.get(Send, batch.send_id)
        if send.state != "sending":
            report.stopped = send.state
            return report
        try:  # before claiming anything: a message that cannot be built stops the send
            template = self._template(session, send)
        except InputError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            self._pause_send(session, send.id, f"{SEND_TIME_FAILURE}: the message cannot be built: {problems}")
            session.commit()
            report.stopped = "paused"
            return report
        except ConfigError as exc:  # the publication's settings: a secret not set, a key file unreadable
            self._pause_send(session, send.id, f"{SEND_TIME_FAILURE}: {exc}")
            session.commit()
            report.stopped = "paused"
            return report
        send_id = send.id
        lease = Lease.take(session, self.settings, batch_id, self.identity, now)
        report.holder = lease.holder
        session.execute(update(Batch).where(Batch.id == batch_id).values(taken_at=clock.now_sql(session, now)))
        claimed = self._claim(session, batch, lease.holder, now)
        report.claimed = len(claimed)
        if not claimed:
            lease.drop(session)
            self._close_batch(session, batch)
            session.commit()
            return report
        session.commit()
        lease.keep_alive()
        try:
            self._deliver_claimed(session, send, batch, template, lease, claimed, report)
            lease.drop(session)
            session.commit()
        except BaseException as exc:
            self._give_back(session, send_id, batch, lease, exc)
            raise
        finally:
            lease.stop()
        return report

    def _deliver_claimed(self, session, send, batch, template, lease: Lease, claimed: list[Claimed], report) -> None:
        claimed = self._skip_unwanted(session, send, lease.holder, claimed, report)
        session.commit()
        out = _HandOver(self, session, send, lease, report, template.lane.transport)
        size = self.chunk_size(template.lane, template.template.size_hint)
        try:
            for start in range(0, len(claimed), size):
                chunk = claimed[start : start + size]
                lease.progressed()
                try:
                    delivered = self._deliver_chunk(session, send, template, lease, chunk, report, out)
                except _SendStopped as stopped:
                    # Paused (by an operator or the error budget) or cancelled,
                    # seen before the chunk went out: it and the rest go back.
                    out.record()
                    report.stopped = stopped.state
                    report.released += self._release(session, lease.holder, claimed[start:], stopped.state)
                    session.commit()
                    break
                except RateLimitDeferred as wait:
                    # The account's limits have no room for a long while: the rows
                    # wait as retries, and the worker moves on to other work. The
                    # chunk still out is answered and recorded first; the rows
                    # given back are those still claimed (none of them went out).
                    out.record()
                    report.stopped = "waiting for the rate limit"
                    report.deferred += self._defer(session, lease.holder, claimed[start:], wait)
                    log.info("batch %s gives back %s row(s): %s", batch.id, report.deferred, wait,
                             extra={"batch_id": batch.id})
                    session.commit()
                    break
                except RateLimitYield as wait:
                    # The account's limit has no room for now and other work
                    # needs the worker: what is out is recorded, the rest goes
                    # back untouched and the batch waits, held, for the beat
                    # to hand it out again (sends.batches_to_requeue).
                    out.record()
                    report.stopped = "held for the rate limit"
                    report.held += self._release(session, lease.holder, claimed[start:], "paused")
                    session.execute(update(Batch).where(Batch.id == batch.id).values(state="held"))
                    log.info("batch %s gives its worker to other work: %s", batch.id, wait,
                             extra={"batch_id": batch.id})
                    session.commit()
                    break
                except RateLimiterUnavailable as exc:
                    # The shared limiter is away: nothing more goes out, but
                    # what was handed over is answered and recorded first, so
                    # it is never sent again. The rest goes back for the beat.
                    out.record()
                    report.stopped = "rate limiter unavailable"
                    report.released += self._release(session, lease.holder, claimed[start:], "paused")
                    self._hand_out_again(session, batch.id)
                    log.warning("batch %s stops: %s", batch.id, exc, extra={"batch_id": batch.id})
                    session.commit()
                    break
                if not delivered:
                    # The lease lapsed (the run was stuck, or the database away for
                    # longer than a lease): what it still holds goes back, and the
                    # beat hands the batch out again.
                    out.record()
                    report.stopped = "claim lapsed"
                    report.released += self._release(session, lease.holder, claimed[start:], "paused")
                    self._hand_out_again(session, batch.id)
                    session.commit()
                    break
                session.commit()
            out.record()
            if report.withdrawn and not report.stopped:
                # The run lost its lease with messages not yet handed over: they
                # went back to pending, and the beat hands the batch out again.
                self._hand_out_again(session, batch.id)
            if (report.withdrawn or report.taken_over) and not report.stopped:
                report.stopped = "claim lapsed"
            session.commit()
        finally:
            out.wait()  # nothing is left at the transport when this returns, or raises
        self._close_batch(session, batch)

    def _claim(self, session: Session, batch: Batch, holder: str, now: datetime | None) -> list[Claimed]:
        in_batch = and_(
            Delivery.send_id == batch.send_id,
            Delivery.id >= batch.first_delivery_id,
            Delivery.id <= batch.last_delivery_id,
        )
        holders = session.scalars(
            select(Delivery.claimed_by).where(in_batch, Delivery.state.in_(ACTIVE_ROW_STATES)).distinct()
        ).all()
        gone = [h for h in holders if holder_is_gone(h)]
        now = clock.now_sql(session, now)  # leases are judged by the database's clock
        in_doubt = Delivery.state == "sending"
        takeable = or_(
            Delivery.state == "pending",
            and_(Delivery.state == "retry", Delivery.next_attempt_at <= now),
            and_(
                Delivery.state.in_(ACTIVE_ROW_STATES),
                Delivery.claimed_by != holder,
                or_(unheld(now), Delivery.claimed_by.in_(gone)),
            ),
        )
        # A row that was already handed to the transport by a worker that died
        # (or lost its lease) may have been delivered: keep that in the ledger.
        rows = session.execute(
            update(Delivery)
            .where(in_batch, takeable)
            .values(
                state="claimed",
                claimed_by=holder,
                claimed_at=now,
                possible_duplicate=or_(Delivery.possible_duplicate, in_doubt),
                # Each copy in doubt is counted, however often the row is taken over.
                extra_copies=Delivery.extra_copies + case((in_doubt, 1), else_=0),
                updated_at=now,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)  # no ledger row is loaded as an object
        ).scalars().all()
        if not rows:
            return []
        found = session.execute(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.email, Subscriber.name,
                Delivery.attempts, Delivery.possible_duplicate,
            )
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(among(session, Delivery.id, rows), Delivery.claimed_by == holder)
            .order_by(Delivery.id)
        ).all()
        return [Claimed(r[0], r[1], r[2], r[3] or "", r[4], bool(r[5])) for r in found]

    def _skip_unwanted(self, session: Session, send: Send, holder: str, claimed: list[Claimed], report: BatchReport):
        """Honour unsubscribes and suppressions that happened after the freeze.

        Suppression is checked in Python, by every key that can stop the
        address (suppressions.lookup_keys): SQL cannot match the hashed entry
        an erasure of another case of the same address left.
        """
        if not claimed:
            return claimed
        ids = [c.delivery_id for c in claimed]
        still_members = set(
            session.scalars(
                select(Delivery.id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Membership, and_(Membership.subscriber_id == Subscriber.id,
                                       Membership.list_id.in_(list_ids_of(session, send))))
                .where(among(session, Delivery.id, ids), Subscriber.status == "active", Membership.status == "confirmed")
            ).all()
        )
        suppressed = suppressed_addresses(session, [c.email for c in claimed])
        wanted = {c.delivery_id for c in claimed if c.delivery_id in still_members and c.email not in suppressed}
        unwanted = [i for i in ids if i not in wanted]
        if unwanted:
            report.skipped += session.execute(
                update(Delivery)
                .where(Delivery.id.in_(unwanted), Delivery.claimed_by == holder, Delivery.state == "claimed")
                .values(state="skipped", last_error="unsubscribed or suppressed before sending", updated_at=utcnow())
            ).rowcount
        return [c for c in claimed if c.delivery_id in wanted]

    def _deliver_chunk(self, session: Session, send: Send, template, lease: Lease, chunk: list[Claimed],
                       report: BatchReport, out: _HandOver) -> bool:
        """Send one chunk of the rows this run still holds. False if the lease had lapsed."""
        envelopes, unbuildable = [], []
        for row in chunk:
            try:
                envelopes.append(template.envelope(send, row))
            except UnsendableAddress as exc:
                unbuildable.append(Result(row.delivery_id, PERMANENT, error=f"unsendable: {exc}", unsendable=True))
            except InputError as exc:  # e.g. a stored name that would break a header
                unbuildable.append(Result(row.delivery_id, PERMANENT, error=f"cannot build the message: {exc}"))
        # A chunk out that is answered already is recorded first: a throttle in
        # it then slows the account down before this chunk asks for permits.
        if out.record_answered():
            session.commit()  # its rows are not kept locked while the limiter waits
        # After that record, which may have spent the error budget: a paused
        # send hands nothing more over, whichever worker paused it.
        state = session.scalar(chunk_statements(session).send_state, {"send_id": send.id})
        if state != "sending":
            raise _SendStopped(state)
        lane = template.lane
        if getattr(lane.limiter, "limited", True):  # an account with no limit is not asked at all
            def should_wait(_seconds: float) -> bool:
                others = others_need_the_worker(session, send.id, report.batch_id, clock.now_sql(session))
                session.commit()  # no transaction is kept open while the run waits
                return not others

            lane.limiter.acquire(len(envelopes), should_wait=should_wait)
        if not lease.renew(session):
            return False
        # The change to "sending" is the check: only the rows this run still
        # holds change, and only those go out. Another worker may have taken
        # the rest over; they are its to send.
        won = set(
            session.scalars(chunk_statements(session).mark_sending, {
                "ids": [e.delivery_id for e in envelopes], "holder": lease.holder,
                "by_transport": lane.transport_name, "for_account": lane.account,
            }).all()
        ) if envelopes else set()
        session.commit()  # from here on, a crash leaves these rows in doubt
        lost = len(envelopes) - len(won)
        if lost:
            report.taken_over += lost
            log.warning("%s row(s) of batch %s were taken over by another worker before they were sent",
                        lost, report.batch_id, extra={"batch_id": report.batch_id})
        envelopes = [e for e in envelopes if e.delivery_id in won]
        out.send(chunk, envelopes, unbuildable)
        return True

    def _defer(self, session: Session, holder: str, rows: list[Claimed], wait: RateLimitDeferred) -> int:
        """Give claimed rows back as retries due when the limits have room; no attempt is used."""
        now = clock.read(session)
        return session.execute(
            update(Delivery)
            .where(Delivery.id.in_([c.delivery_id for c in rows]), Delivery.claimed_by == holder,
                   Delivery.state == "claimed")
            .values(state="retry", claimed_by="", next_attempt_at=now + timedelta(seconds=wait.seconds),
                    last_error=f"waiting for the rate limit: {wait}"[:2000], updated_at=now)
        ).rowcount

    def _record_results(self, session, send, holder, chunk, envelopes, results, unbuildable, report):
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
            self._uncount_copies_not_made(session, [r for r in results if r.delivery_id not in held])
        message_ids = {e.delivery_id: e.message_id for e in envelopes}
        updates, suppress, withdrawn = [], [], []
        window_end = (send.started_at or now) + timedelta(seconds=self.settings.retry_window_seconds)
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
            decided = outcomes.outcome(result, row, now=now, window_end=window_end, settings=self.settings)
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
                .values(state="pending", claimed_by="", updated_at=now)
            ).rowcount
        if not updates:
            return  # nothing answered: no progress
        # Rows held back untried after a throttle another chunk met only wait:
        # that chunk's record tells the limiter, once.
        throttles = [r for r in answered if r.throttled and not r.held_back]
        if throttles:
            self._slow_down(session, self._templates[send.id].lane, throttles, now)
        for email, result in suppress:
            add_suppression(session, email, "hard_bounce", f"send {send.id}: {result.code} {result.enhanced_code} {result.error}"[:200])
        attempts, failures = self._count_for_error_budget(session, send, report, now)
        self._check_error_budget(session, send.id, attempts, failures, report)

    def _uncount_copies_not_made(self, session: Session, results: list[Result]) -> None:
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

    def _slow_down(self, session: Session, lane: Lane, throttles: list[Result], now: datetime) -> None:
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

    def _release(self, session: Session, holder: str, rows: list[Claimed], state: str) -> int:
        """Give back claimed rows when a send is paused (pending) or cancelled."""
        target = "cancelled" if state == "cancelled" else "pending"
        return session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_([c.delivery_id for c in rows]),
                Delivery.claimed_by == holder,
                Delivery.state == "claimed",
            )
            .values(state=target, claimed_by="", updated_at=clock.now_sql(session))
        ).rowcount

    def _give_back(self, session: Session, send_id: int, batch: Batch, lease: Lease, exc: BaseException) -> None:
        """A run that raised gives back what it holds, so nothing waits for it.

        Claimed rows go back to pending; rows it had handed to the transport
        go back too, flagged: they may have been delivered. The beat hands
        the batch out again at its next tick. A failure that would only
        repeat (not the database or the limiter being away) pauses the send
        with its reason. If the database is away, nothing can be written:
        the lease lapses and the rows are taken over after it.
        """
        batch_id, rows = batch.id, (batch.send_id, batch.first_delivery_id, batch.last_delivery_id)
        try:
            session.rollback()
            in_batch = and_(
                Delivery.send_id == rows[0],
                Delivery.id >= rows[1],
                Delivery.id <= rows[2],
                Delivery.claimed_by == lease.holder,
            )
            in_doubt = Delivery.state == "sending"
            returned = session.execute(
                update(Delivery).where(in_batch, Delivery.state.in_(ACTIVE_ROW_STATES))
                .values(state="pending", claimed_by="", updated_at=clock.now_sql(session),
                        possible_duplicate=or_(Delivery.possible_duplicate, in_doubt),
                        extra_copies=Delivery.extra_copies + case((in_doubt, 1), else_=0))
            ).rowcount
            self._hand_out_again(session, batch_id)
            if isinstance(exc, Exception) and not isinstance(exc, TRANSIENT_FAILURES):
                reason = f"{SEND_TIME_FAILURE}: batch {batch_id} failed: {type(exc).__name__}: {exc}"
                self._pause_send(session, send_id, reason)
            lease.drop(session)
            session.commit()
            log.warning("batch %s failed; %s row(s) given back", batch_id, returned, extra={"batch_id": batch_id})
        except Exception:  # noqa: BLE001 - the original failure is what the caller must see
            session.rollback()
            log.warning("batch %s failed and could not give its rows back; they are taken over when its claim lapses",
                        batch_id, exc_info=True, extra={"batch_id": batch_id})

    def _hand_out_again(self, session: Session, batch_id: int) -> None:
        """Let the next beat tick enqueue the batch (sending.batches_to_requeue)."""
        session.execute(update(Batch).where(Batch.id == batch_id).values(state="waiting"))

    def _pause_send(self, session: Session, send_id: int, reason: str) -> None:
        paused = session.execute(
            update(Send).where(Send.id == send_id, Send.state == "sending")
            .values(state="paused", paused_reason=reason[:2000], updated_at=utcnow())
        ).rowcount
        if paused:
            record_send_event(session, send_id, "paused", reason[:2000])
            log.error("send paused", extra={"send_id": send_id, "reason": reason})

    def _close_batch(self, session: Session, batch: Batch) -> None:
        open_rows = exists().where(
            Delivery.send_id == batch.send_id,
            Delivery.id >= batch.first_delivery_id,
            Delivery.id <= batch.last_delivery_id,
            Delivery.state.in_(("pending", "claimed", "sending")),
        )
        session.execute(update(Batch).where(Batch.id == batch.id, ~open_rows).values(state="done"))

    def _count_for_error_budget(self, session: Session, send: Send, report: BatchReport, now: datetime):
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
            "window": max(self.settings.error_budget_minimum, send.batch_size),
        }).one()

    def _check_error_budget(self, session: Session, send_id: int, attempted: int, failures: int,
                            report: BatchReport) -> None:
        if attempted < self.settings.error_budget_minimum or failures < attempted * self.settings.error_budget_ratio:
            return
        common = max(set(report.errors), key=report.errors.count) if report.errors else ""
        self._pause_send(session, send_id, f"error budget exceeded: {failures} of {attempted} messages failed; "
                                           f"most common error: {common}")

    def _template(self, session: Session, send: Send) -> SendTemplate:
        # Compiled once per send in each worker; List-Id and Feedback-ID are per send.
        if send.id not in self._templates:
            self._templates[send.id] = SendTemplate.load(session, self.settings, send, lanes=self.lanes)
        return self._templates[send.id]
