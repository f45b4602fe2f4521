"""Sends over time: claim due sends, freeze audiences, plan batches, keep them
moving, finish them, and say how far they are.

The ledger (``deliveries``) alone decides who has been sent. Every change of a
row's state is a conditional UPDATE, so a replayed tick, a task delivered
twice or two workers on the same batch cannot send a message twice:

    pending -> claimed -> sending -> sent | failed | retry
                                      retry -> claimed -> ...
    claimed/pending -> skipped (unsubscribed or suppressed at claim time)
    pending/retry -> cancelled

Delivering one batch is ``delivery.Deliverer``'s job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from newsletter.config import Settings
from newsletter.sending.leases import unheld
from newsletter.sending.scheduling import had_issue, reached_before
from newsletter.sending.send_record import get_send, list_ids_of, publication_of, record_send_event
from newsletter.audience.segments import audience_filter
from newsletter.store import clock
from newsletter.store.models import (
    ACTIVE_ROW_STATES,
    Batch,
    BatchState,
    ClaimLease,
    Delivery,
    DeliveryState,
    FINAL_ROW_STATES,
    Membership,
    ONE_COPY_INDEX,
    Send,
    SendState,
    Subscriber,
    UNFINISHED_ROW_STATES,
    UTCDateTime,
    utcnow,
)

log = logging.getLogger(__name__)

LOST_BATCHES_EVENT = "batches_lost"  # a send event: the broker lost batches, handed out again
FREEZE_PAGE = 50_000  # subscriber ids per INSERT .. SELECT when an audience is frozen


# --- starting a send -------------------------------------------------------------


def claim_due_sends(session: Session, settings: Settings, now: datetime | None = None) -> list[int]:
    """Start every send whose time has come; return the batch ids to enqueue.

    Claiming is one conditional UPDATE per send (scheduled -> sending), so two
    beats or a replayed tick start a send once. The audience is frozen and
    the batches planned in the same transaction as the claim.
    """
    now = now or utcnow()
    due = session.scalars(
        select(Send.id).where(Send.state == SendState.SCHEDULED, Send.scheduled_at <= now).order_by(Send.scheduled_at)
    ).all()
    batch_ids: list[int] = []
    for send_id in due:
        claimed = session.execute(
            update(Send)
            .where(Send.id == send_id, Send.state == SendState.SCHEDULED)
            .values(state=SendState.SENDING, started_at=now, last_progress_at=now, updated_at=now)
        ).rowcount
        if claimed != 1:
            continue  # another tick got it first
        try:
            earlier = reached_before(session, get_send(session, send_id))  # asked before its own rows exist
            size = freeze_audience(session, send_id)
            planned = plan_batches(session, send_id, now=now)
            left_out = _left_out(session, send_id) if earlier else ""
            record_send_event(session, send_id, "started", f"audience frozen at {size} recipients{left_out}")
            session.commit()
        except IntegrityError as exc:
            # Only this send's claim is undone: the sends before it are committed, and
            # their batches are still returned. It stays scheduled for the next tick.
            session.rollback()
            log.warning("send not started, tried again at the next tick: %s", _why_not_frozen(exc),
                        extra={"send_id": send_id})
            continue
        batch_ids += planned
        log.info("send started", extra={"send_id": send_id, "audience": size})
    return batch_ids


def _why_not_frozen(exc: IntegrityError) -> str:
    if ONE_COPY_INDEX in str(exc.orig):
        return "another send of its issue was taking some of the same people at the same moment"
    return str(exc.orig).splitlines()[0]


def freeze_audience(session: Session, send_id: int) -> int:
    """One ledger row per recipient who should get the send, as of now.

    The audience (``segments.audience_filter``: confirmed on one of the send's
    lists, active, not suppressed, matching its segment) is copied into the
    ledger by INSERT .. SELECT, one keyset page of subscriber ids at a time, so
    neither this process nor the database holds the whole audience at once.
    One row per subscriber, and so one per person: a person is one subscriber
    whatever the case of their address. Later subscribers are not added;
    later unsubscribes are honoured when the row is claimed.

    One copy of an issue per person, across its sends: people an earlier send
    of the issue reached (or is reaching) are left out, unless this send is an
    explicit resend, whose rows for them are marked ``resend``. The database
    holds to it too (``ONE_COPY_INDEX``): two sends of one issue frozen at the
    same moment (two beats) cannot both take a person; the second's INSERT
    fails once the first commits, ``claim_due_sends`` rolls back its claim
    alone, and the next tick starts it without the people the first took.
    """
    send = get_send(session, send_id)
    publication, list_ids = publication_of(session, send), list_ids_of(session, send)
    earlier = reached_before(session, send)
    # INSERT .. SELECT skips Python-side defaults, so every column is given.
    columns = {
        "send_id": literal(send_id),
        "issue_id": literal(send.issue_id),
        "resend": had_issue(send.issue_id, send_id) if send.resend and earlier else literal(False),
        "subscriber_id": Subscriber.id,
        "email": Subscriber.email,
        "state": literal(DeliveryState.PENDING.value),
        "attempts": literal(0),
        "last_error": literal(""),
        "message_id": literal(""),
        "provider_message_id": literal(""),
        "claimed_by": literal(""),
        "possible_duplicate": literal(False),
        "updated_at": literal(utcnow(), UTCDateTime()),
    }
    first = session.scalar(select(func.min(Subscriber.id)))
    while first is not None:
        last = session.scalar(
            select(Subscriber.id).where(Subscriber.id >= first).order_by(Subscriber.id).offset(FREEZE_PAGE - 1).limit(1)
        )
        where = audience_filter(session, publication, list_ids, send.segment_condition, strict=False,
                                first_id=first, last_id=last)
        if earlier and not send.resend:
            where = and_(where, ~had_issue(send.issue_id, send_id))
        audience = select(*(value.label(name) for name, value in columns.items())).where(where).order_by(Subscriber.id)
        session.execute(insert(Delivery).from_select(list(columns), audience))
        first = None if last is None else session.scalar(select(func.min(Subscriber.id)).where(Subscriber.id > last))
    size = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.send_id == send_id))
    session.execute(update(Send).where(Send.id == send_id).values(audience_size=size))
    refresh_planner_statistics(session)
    return size


def _left_out(session: Session, send_id: int) -> str:
    """What the "started" line says of people an earlier send of the issue reached."""
    send = get_send(session, send_id)
    if send.resend:
        again = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.send_id == send_id, Delivery.resend))
        return f"; {again} of them already had this issue and get it again (a resend)" if again else ""
    where = audience_filter(session, publication_of(session, send), list_ids_of(session, send), send.segment_condition,
                            strict=False)
    had = session.scalar(select(func.count()).select_from(Subscriber).where(where, had_issue(send.issue_id, send_id))) or 0
    return f"; {had} who already had this issue from an earlier send are left out" if had else ""


def refresh_planner_statistics(session: Session) -> None:
    """Let PostgreSQL see the ledger rows just added (and a recent import).

    Autovacuum notices a bulk insert only after a while; until then the planner
    takes the tables for nearly empty and plans the per-batch joins as nested
    loops over the whole list: seconds per batch instead of milliseconds.
    """
    if session.get_bind().dialect.name == "postgresql":
        for table in (Delivery, Subscriber, Membership):
            session.execute(text(f"ANALYZE {table.__tablename__}"))


def plan_batches(session: Session, send_id: int, *, now: datetime) -> list[int]:
    """Cut the ledger into keyset pages of ``batch_size`` rows, in one INSERT .. SELECT:
    the ledger rows numbered in id order, the n-th page holding rows n * size to
    (n + 1) * size - 1 (no OFFSET, and no ids through this process)."""
    send = get_send(session, send_id)
    numbered = (
        select(Delivery.id.label("id"), ((func.row_number().over(order_by=Delivery.id) - 1) // send.batch_size).label("page"))
        .where(Delivery.send_id == send_id)
        .subquery()
    )
    pages = (
        select(literal(send_id), func.min(numbered.c.id), func.max(numbered.c.id), func.count(), literal(BatchState.QUEUED.value),
               literal(now, UTCDateTime()), literal(1))
        .group_by(numbered.c.page)
        .order_by(numbered.c.page)
    )
    columns = ["send_id", "first_delivery_id", "last_delivery_id", "size", "state", "enqueued_at", "times_enqueued"]
    session.execute(insert(Batch).from_select(columns, pages))
    return session.scalars(select(Batch.id).where(Batch.send_id == send_id).order_by(Batch.id)).all()


# --- keeping sends moving ----------------------------------------------------------


def batches_to_requeue(session: Session, settings: Settings, now: datetime | None = None, *,
                       queue_empty: bool | None = None) -> list[int]:
    """Batches whose task must be enqueued again, and mark them enqueued.

    - a batch marked ``waiting``: its send was resumed, or a run gave it back;
    - rows waiting for a retry whose time has come;
    - rows held by a run whose lease has lapsed (its worker died, or lost the
      database for longer than a lease), once per lease;
    - a batch the broker lost (``lost_batches``), when the caller saw the send
      queue empty (``queue_empty``);
    - a sending send that made no progress for ``claim_timeout_seconds`` while
      some of its batches still have unfinished rows (the broker lost the tasks,
      and its queue could not be read);
    - one ``held`` batch of a send that has no batch out (queued or paced):
      its rate-limited run gave the worker to other work (see
      ``others_need_the_worker``). It goes out ``paced``, one at a time per
      send, so a send waiting for its account's limit never fills the queue.

    ``now``: the database's clock unless given.
    """
    now = clock.read(session, now)
    stall = timedelta(seconds=settings.claim_timeout_seconds)
    lease = timedelta(seconds=settings.claim_lease_seconds)
    in_range = and_(
        Delivery.send_id == Batch.send_id,
        Delivery.id >= Batch.first_delivery_id,
        Delivery.id <= Batch.last_delivery_id,
    )
    retry_due = exists().where(in_range, Delivery.state == DeliveryState.RETRY, Delivery.next_attempt_at <= now)
    unfinished = exists().where(in_range, Delivery.state.in_(UNFINISHED_ROW_STATES))
    orphaned = exists().where(in_range, Delivery.state.in_(ACTIVE_ROW_STATES), unheld(now))
    stalled_send = or_(Send.last_progress_at.is_(None), Send.last_progress_at < now - stall)
    query = (
        select(Batch.id)
        .join(Send, Send.id == Batch.send_id)
        .where(Send.state == SendState.SENDING)
        .where(
            or_(
                Batch.state == BatchState.WAITING,
                and_(Batch.state == BatchState.DONE, retry_due),
                and_(Batch.enqueued_at < now - lease, orphaned),
                and_(Batch.enqueued_at < now - stall, stalled_send, unfinished),
            )
        )
        .order_by(Batch.id)
    )
    ids = session.scalars(query).all()
    if queue_empty:
        lost = lost_batches(session, settings, now)
        ids = sorted(set(ids) | set(lost))
        _record_lost(session, settings, lost)
    out = aliased(Batch)
    paced = session.scalars(
        select(func.min(Batch.id))
        .join(Send, Send.id == Batch.send_id)
        .where(Send.state == SendState.SENDING, Batch.state == BatchState.HELD,
               ~exists().where(out.send_id == Batch.send_id, out.state.in_((BatchState.QUEUED, BatchState.PACED))))
        .group_by(Batch.send_id)
    ).all()
    paced = [i for i in paced if i not in ids]
    for batch_ids, state in ((ids, BatchState.QUEUED), (paced, BatchState.PACED)):
        if batch_ids:
            session.execute(
                update(Batch)
                .where(Batch.id.in_(batch_ids))
                .values(state=state, enqueued_at=now, times_enqueued=Batch.times_enqueued + 1)
            )
    return sorted([*ids, *paced])


def others_need_the_worker(session: Session, send_id: int, batch_id: int, now: datetime) -> bool:
    """Whether a run of ``batch_id`` should give its worker up rather than wait
    for its account's rate limit.

    Yes when another run of the same send is under way on an earlier batch
    (one run a send is enough to wait for one limit), or when another sending
    send has a batch handed out that no worker has started yet (queued, and
    no live lease on it): that send may be able to go now. Batches handed out
    again after a hold (``paced``) do not count: they too would only wait for
    a limit, and two sends of one account would take turns for nothing.
    """
    live = select(ClaimLease.batch_id).where(ClaimLease.expires_at >= now)
    same_send_earlier = (
        select(Batch.id)
        .where(Batch.send_id == send_id, Batch.id < batch_id, Batch.id.in_(live))
        .exists()
    )
    waiting = (
        select(Batch.id)
        .join(Send, Send.id == Batch.send_id)
        .where(Batch.state == BatchState.QUEUED, Batch.send_id != send_id, Send.state == SendState.SENDING, Batch.id.not_in(live))
        .exists()
    )
    return bool(session.scalar(select(or_(same_send_earlier, waiting))))


def lost_batches(session: Session, settings: Settings, now: datetime) -> list[int]:
    """Batches of sending sends enqueued more than ``batch_lost_seconds`` ago that
    no run has begun since, with rows to send. Judged one batch at a time, by the
    database's clock: the rest of the send being busy does not hide a lost one.
    Only the caller knows whether the queue is empty (then they were lost, not waiting)."""
    unfinished = exists().where(
        Delivery.send_id == Batch.send_id,
        Delivery.id >= Batch.first_delivery_id,
        Delivery.id <= Batch.last_delivery_id,
        Delivery.state.in_(UNFINISHED_ROW_STATES),
    )
    return session.scalars(
        select(Batch.id).join(Send, Send.id == Batch.send_id)
        .where(Send.state == SendState.SENDING, Batch.state.in_((BatchState.QUEUED, BatchState.PACED)),
               Batch.enqueued_at < now - timedelta(seconds=settings.batch_lost_seconds),
               or_(Batch.taken_at.is_(None), Batch.taken_at < Batch.enqueued_at), unfinished)
        .order_by(Batch.id)
    ).all()


def _record_lost(session: Session, settings: Settings, batch_ids: list[int]) -> None:
    """Say in each send's history that the broker lost some of its batches (ops shows it)."""
    if not batch_ids:
        return
    by_send = session.execute(
        select(Batch.send_id, func.count()).where(Batch.id.in_(batch_ids)).group_by(Batch.send_id)
    ).all()
    for send_id, count in by_send:
        detail = (f"{count} batch(es) enqueued over {settings.batch_lost_seconds}s ago never reached a worker, "
                  "and the send queue was empty: the broker lost them; handed out again")
        record_send_event(session, send_id, LOST_BATCHES_EVENT, detail)
        log.warning("the broker lost %s batch(es) of send %s; handed out again", count, send_id,
                    extra={"send_id": send_id})


def finish_sends(session: Session, now: datetime | None = None) -> list[int]:
    """Mark finished every sending send whose ledger rows are all final."""
    now = now or utcnow()
    open_rows = exists().where(Delivery.send_id == Send.id, Delivery.state.in_(UNFINISHED_ROW_STATES))
    ids = session.scalars(select(Send.id).where(Send.state == SendState.SENDING, ~open_rows)).all()
    finished = []
    for send_id in ids:
        done = session.execute(
            update(Send)
            .where(Send.id == send_id, Send.state == SendState.SENDING, ~open_rows)
            .values(state=SendState.FINISHED, finished_at=now, updated_at=now)
        ).rowcount
        if done:
            record_send_event(session, send_id, "finished", summary_line(progress(session, send_id)))
            finished.append(send_id)
    return finished


def tick(session: Session, settings: Settings, now: datetime | None = None, *,
         queue_empty: bool | None = None) -> list[int]:
    """What the beat does every few seconds: start, keep moving, finish.

    Returns the batch ids whose tasks must be enqueued. ``queue_empty``: whether
    the broker's send queue was seen empty (None: it could not be read).
    ``now``: the database's clock unless given.
    """
    now = clock.read(session, now)
    batch_ids = claim_due_sends(session, settings, now)
    batch_ids += batches_to_requeue(session, settings, now, queue_empty=queue_empty)
    finish_sends(session, now)
    session.commit()
    return batch_ids


# --- progress, for people ------------------------------------------------------------


@dataclass
class Progress:
    send_id: int
    state: str
    audience: int
    counts: dict[str, int]
    possible_duplicates: int
    paused_reason: str = ""
    extra_copies: int = 0  # copies beyond the first that may have reached people (at most)

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL_ROW_STATES)

    @property
    def pending(self) -> int:
        return sum(self.counts.get(s, 0) for s in UNFINISHED_ROW_STATES)


def progress(session: Session, send_id: int) -> Progress:
    send = get_send(session, send_id)
    counts = dict(
        session.execute(
            select(Delivery.state, func.count()).where(Delivery.send_id == send_id).group_by(Delivery.state)
        ).all()
    )
    duplicates, extra = session.execute(
        select(func.count(), func.coalesce(func.sum(Delivery.extra_copies), 0))
        .where(Delivery.send_id == send_id, Delivery.possible_duplicate.is_(True))
    ).one()
    return Progress(send_id, send.state, send.audience_size, counts, duplicates or 0, send.paused_reason, int(extra or 0))


def summary_line(p: Progress) -> str:
    c = p.counts
    return (
        f"{c.get('sent', 0)} sent, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped, "
        f"{c.get('cancelled', 0)} cancelled, {p.pending} pending, {p.possible_duplicates} possibly duplicated"
        + (f" ({p.extra_copies} extra copies at most)" if p.extra_copies > p.possible_duplicates else "")
    )


def sent_through(session: Session, send_id: int) -> list[tuple[str, str, int]]:
    """(transport, account, rows) the send's ledger rows were handed to, most first."""
    rows = session.execute(
        select(Delivery.transport, Delivery.account, func.count())
        .where(Delivery.send_id == send_id, Delivery.transport != "")
        .group_by(Delivery.transport, Delivery.account)
    ).all()
    return sorted(((t, a, n) for t, a, n in rows), key=lambda r: (-r[2], r[0], r[1]))
