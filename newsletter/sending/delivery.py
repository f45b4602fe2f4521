"""Delivering one batch: claim its ledger rows, personalise each message, hand
it to the transport, record each recipient's result.

A run, read top to bottom: ``Deliverer.deliver_batch`` takes the batch's
lease (``leases.py``) and claims its rows (``claims.py``); each chunk of
them is built (``send_template.py``), let through by the account's limiter,
marked ``sending`` and handed to the transport (``handover.py``); the
answers are recorded (``records.py``, which ``outcomes.py`` tells what each
means). A run changes only rows it still holds. A row left in ``sending`` by
a run that died, or lost its lease, may or may not have reached the server.
It is sent again (none lost) and flagged ``possible_duplicate`` (counted,
never hidden).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from sqlalchemy import update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from newsletter.authoring.header_checks import UnsendableAddress
from newsletter.config import ConfigError, Settings
from newsletter.errors import InputError
from newsletter.sending import claims, records
from newsletter.sending.chunk_sql import chunk_statements
from newsletter.sending.claims import Claimed
from newsletter.sending.handover import HandOver
from newsletter.sending.lanes import Lane, Lanes
from newsletter.sending.leases import Lease, process_identity
from newsletter.sending.lifecycle import others_need_the_worker
from newsletter.sending.ratelimit import RateLimitDeferred, RateLimiterUnavailable, RateLimitYield
from newsletter.sending.records import BatchReport
from newsletter.sending.send_record import pause_send
from newsletter.sending.send_template import SendTemplate
from newsletter.store import clock
from newsletter.store.models import Batch, BatchState, Send, SendState
from newsletter.transports.base import PERMANENT, Result, Transport

log = logging.getLogger(__name__)

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
    # answered, see handover.HandOver). A provider API takes its own batch size; over
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
        if send.state != SendState.SENDING:
            report.stopped = send.state
            return report
        try:  # before claiming anything: a message that cannot be built stops the send
            template = self._template(session, send)
        except InputError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            pause_send(session, send.id, f"{SEND_TIME_FAILURE}: the message cannot be built: {problems}")
            session.commit()
            report.stopped = "paused"
            return report
        except ConfigError as exc:  # the publication's settings: a secret not set, a key file unreadable
            pause_send(session, send.id, f"{SEND_TIME_FAILURE}: {exc}")
            session.commit()
            report.stopped = "paused"
            return report
        send_id = send.id
        lease = Lease.take(session, self.settings, batch_id, self.identity, now)
        report.holder = lease.holder
        session.execute(update(Batch).where(Batch.id == batch_id).values(taken_at=clock.now_sql(session, now)))
        claimed = claims.claim_rows(session, batch, lease.holder, now)
        report.claimed = len(claimed)
        if not claimed:
            lease.drop(session)
            claims.close_batch(session, batch)
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
        claimed, skipped = claims.skip_unwanted(session, send, lease.holder, claimed)
        report.skipped += skipped
        session.commit()
        record = partial(records.record_results, session, self.settings, send, template.lane, lease.holder, report=report)
        out = HandOver(template.lane.transport, lease, self._calls, record)
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
                    report.released += claims.release(session, lease.holder, claimed[start:], stopped.state)
                    session.commit()
                    break
                except RateLimitDeferred as wait:
                    # The account's limits have no room for a long while: the rows
                    # wait as retries, and the worker moves on to other work. The
                    # chunk still out is answered and recorded first; the rows
                    # given back are those still claimed (none of them went out).
                    out.record()
                    report.stopped = "waiting for the rate limit"
                    report.deferred += claims.defer(session, lease.holder, claimed[start:], wait)
                    log.info("batch %s gives back %s row(s): %s", batch.id, report.deferred, wait,
                             extra={"batch_id": batch.id})
                    session.commit()
                    break
                except RateLimitYield as wait:
                    # The account's limit has no room for now and other work
                    # needs the worker: what is out is recorded, the rest goes
                    # back untouched and the batch waits, held, for the beat
                    # to hand it out again (lifecycle.batches_to_requeue).
                    out.record()
                    report.stopped = "held for the rate limit"
                    report.held += claims.release(session, lease.holder, claimed[start:], SendState.PAUSED)
                    session.execute(update(Batch).where(Batch.id == batch.id).values(state=BatchState.HELD))
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
                    report.released += claims.release(session, lease.holder, claimed[start:], SendState.PAUSED)
                    claims.hand_out_again(session, batch.id)
                    log.warning("batch %s stops: %s", batch.id, exc, extra={"batch_id": batch.id})
                    session.commit()
                    break
                if not delivered:
                    # The lease lapsed (the run was stuck, or the database away for
                    # longer than a lease): what it still holds goes back, and the
                    # beat hands the batch out again.
                    out.record()
                    report.stopped = "claim lapsed"
                    report.released += claims.release(session, lease.holder, claimed[start:], SendState.PAUSED)
                    claims.hand_out_again(session, batch.id)
                    session.commit()
                    break
                session.commit()
            out.record()
            if report.withdrawn and not report.stopped:
                # The run lost its lease with messages not yet handed over: they
                # went back to pending, and the beat hands the batch out again.
                claims.hand_out_again(session, batch.id)
            if (report.withdrawn or report.taken_over) and not report.stopped:
                report.stopped = "claim lapsed"
            session.commit()
        finally:
            out.wait()  # nothing is left at the transport when this returns, or raises
        claims.close_batch(session, batch)

    def _deliver_chunk(self, session: Session, send: Send, template, lease: Lease, chunk: list[Claimed],
                       report: BatchReport, out: HandOver) -> bool:
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
        if state != SendState.SENDING:
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
            returned = claims.give_back(session, rows, lease.holder)
            claims.hand_out_again(session, batch_id)
            if isinstance(exc, Exception) and not isinstance(exc, TRANSIENT_FAILURES):
                reason = f"{SEND_TIME_FAILURE}: batch {batch_id} failed: {type(exc).__name__}: {exc}"
                pause_send(session, send_id, reason)
            lease.drop(session)
            session.commit()
            log.warning("batch %s failed; %s row(s) given back", batch_id, returned, extra={"batch_id": batch_id})
        except Exception:  # noqa: BLE001 - the original failure is what the caller must see
            session.rollback()
            log.warning("batch %s failed and could not give its rows back; they are taken over when its claim lapses",
                        batch_id, exc_info=True, extra={"batch_id": batch_id})

    def _template(self, session: Session, send: Send) -> SendTemplate:
        # Compiled once per send in each worker; List-Id and Feedback-ID are per send.
        if send.id not in self._templates:
            self._templates[send.id] = SendTemplate.load(session, self.settings, send, lanes=self.lanes)
        return self._templates[send.id]
