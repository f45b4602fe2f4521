"""A batch's ledger rows: claimed by a run, and given back.

A run claims the rows of its batch that are its to send (pending, a retry
that is due, or held by a run that is gone or whose lease lapsed) under its
lease (``leases.py``), and changes only rows it still holds. A row a run
had handed to the transport when it died or lost its lease may have been
delivered: the next claim sends it again (none lost) and counts it,
``possible_duplicate`` and one more of ``extra_copies`` (never hidden).
Rows a run does not send go back: pending when the send is paused or the
run stops, cancelled with the send, a retry when the account's limit has
no room for a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.orm import Session

from newsletter.audience.suppressions import suppressed_addresses
from newsletter.sending.leases import holder_is_gone, unheld
from newsletter.sending.ratelimit import RateLimitDeferred
from newsletter.sending.send_record import list_ids_of
from newsletter.store import clock
from newsletter.store.lookups import among
from newsletter.store.models import (
    ACTIVE_ROW_STATES,
    Batch,
    BatchState,
    Delivery,
    DeliveryState,
    Membership,
    Send,
    SendState,
    Subscriber,
    utcnow,
)


@dataclass(frozen=True)
class Claimed:
    """A ledger row a run holds, with what its message needs."""

    delivery_id: int
    subscriber_id: int | None
    email: str
    name: str
    attempts: int
    possible_duplicate: bool


def claim_rows(session: Session, batch: Batch, holder: str, now: datetime | None) -> list[Claimed]:
    """Take the rows of the batch that are ``holder``'s to send now, in id order."""
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
    in_doubt = Delivery.state == DeliveryState.SENDING
    takeable = or_(
        Delivery.state == DeliveryState.PENDING,
        and_(Delivery.state == DeliveryState.RETRY, Delivery.next_attempt_at <= now),
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
            state=DeliveryState.CLAIMED,
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


def skip_unwanted(session: Session, send: Send, holder: str, claimed: list[Claimed]) -> tuple[list[Claimed], int]:
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
    skipped = 0
    if unwanted:
        skipped = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(unwanted), Delivery.claimed_by == holder, Delivery.state == DeliveryState.CLAIMED)
            .values(state=DeliveryState.SKIPPED, last_error="unsubscribed or suppressed before sending", updated_at=utcnow())
        ).rowcount
    return [c for c in claimed if c.delivery_id in wanted], skipped


def release(session: Session, holder: str, rows: list[Claimed], state: str) -> int:
    """Give back claimed rows when a send is paused (pending) or cancelled."""
    target = DeliveryState.CANCELLED if state == SendState.CANCELLED else DeliveryState.PENDING
    return session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_([c.delivery_id for c in rows]),
            Delivery.claimed_by == holder,
            Delivery.state == DeliveryState.CLAIMED,
        )
        .values(state=target, claimed_by="", updated_at=clock.now_sql(session))
    ).rowcount


def defer(session: Session, holder: str, rows: list[Claimed], wait: RateLimitDeferred) -> int:
    """Give claimed rows back as retries due when the limits have room; no attempt is used."""
    now = clock.read(session)
    return session.execute(
        update(Delivery)
        .where(Delivery.id.in_([c.delivery_id for c in rows]), Delivery.claimed_by == holder,
               Delivery.state == DeliveryState.CLAIMED)
        .values(state=DeliveryState.RETRY, claimed_by="", next_attempt_at=now + timedelta(seconds=wait.seconds),
                last_error=f"waiting for the rate limit: {wait}"[:2000], updated_at=now)
    ).rowcount


def give_back(session: Session, rows: tuple[int, int, int], holder: str) -> int:
    """Every row of a batch (its send, first and last delivery id) that a run that
    failed holds goes back to pending; those it had handed to the transport
    are flagged, as the next claim would flag them. How many went back."""
    send_id, first, last = rows
    in_batch = and_(
        Delivery.send_id == send_id,
        Delivery.id >= first,
        Delivery.id <= last,
        Delivery.claimed_by == holder,
    )
    in_doubt = Delivery.state == DeliveryState.SENDING
    return session.execute(
        update(Delivery).where(in_batch, Delivery.state.in_(ACTIVE_ROW_STATES))
        .values(state=DeliveryState.PENDING, claimed_by="", updated_at=clock.now_sql(session),
                possible_duplicate=or_(Delivery.possible_duplicate, in_doubt),
                extra_copies=Delivery.extra_copies + case((in_doubt, 1), else_=0))
    ).rowcount


def hand_out_again(session: Session, batch_id: int) -> None:
    """Let the next beat tick enqueue the batch (lifecycle.batches_to_requeue)."""
    session.execute(update(Batch).where(Batch.id == batch_id).values(state=BatchState.WAITING))


def close_batch(session: Session, batch: Batch) -> None:
    """The batch is done once none of its rows is left to send."""
    open_rows = exists().where(
        Delivery.send_id == batch.send_id,
        Delivery.id >= batch.first_delivery_id,
        Delivery.id <= batch.last_delivery_id,
        Delivery.state.in_((DeliveryState.PENDING, DeliveryState.CLAIMED, DeliveryState.SENDING)),
    )
    session.execute(update(Batch).where(Batch.id == batch.id, ~open_rows).values(state=BatchState.DONE))
