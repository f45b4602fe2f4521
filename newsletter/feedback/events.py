"""Provider events -> delivered / bounced / complained / unsubscribed -> suppression.

Every source (a provider's webhook, the bounce mailbox) turns what it hears
into ``Event`` values; ``record_events`` stores and applies them. Providers
send an event twice and out of order, so:

- an event is recorded once per ``(source, key)``; the second copy changes nothing;
- nothing an event does is undone by a later one: a suppression is never
  lifted by an event, and a delivery's outcome is the worst thing heard of it
  (complained > bounced > unsubscribed > delivered), whatever the order.

Suppression rules: a hard bounce or a complaint suppresses the address at
once, for every list; soft bounces of ``soft_bounce_threshold`` different
messages within ``soft_bounce_window_days`` do too. The entry is keyed by
``suppressions.suppression_key``, so it stops mail to the address whatever
the case of its local part.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from email_validator import EmailNotValidError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import address_key
from newsletter.config import Settings
from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.models import (
    Delivery,
    ProviderEvent,
    Send,
    Subscriber,
    Suppression,
    WebhookNonce,
    utcnow,
)
from newsletter.store.upsert import insert_ignore
from newsletter.audience.suppressions import HASH_PREFIX, add_suppression, find_suppression, hashed_address, is_suppressed

log = logging.getLogger(__name__)

DELIVERED, BOUNCED, COMPLAINED, UNSUBSCRIBED = "delivered", "bounced", "complained", "unsubscribed"
KINDS = (DELIVERED, BOUNCED, COMPLAINED, UNSUBSCRIBED)
HARD, SOFT = "hard", "soft"
# A refusal of the sender or the content (5.7.x: authentication, reputation,
# policy), not of the address: recorded, and never held against the person.
BLOCKED = "blocked"
BOUNCE_KINDS = (HARD, SOFT, BLOCKED)
# The worst thing heard of a message wins, whatever order the events came in.
PRECEDENCE = {DELIVERED: 0, UNSUBSCRIBED: 1, BOUNCED: 2, COMPLAINED: 3}
SUPPRESSION_REASONS = ("hard_bounce", "complaint", "soft_bounce", "manual", "erased")

# Our Message-IDs (message.make_message_id) name their ledger row.
_OUR_MESSAGE_ID = re.compile(r"<?nl\.(\d+)\.(\d+)(?:\.[0-9a-f]+)?@[^>]+>?")


@dataclass(frozen=True)
class Event:
    """One normalised event about one recipient of one message."""

    source: str  # ses | sendgrid | mailgun | postmark | mailbox
    key: str  # the same event sent twice has the same key
    kind: str  # one of KINDS
    email: str
    occurred_at: datetime
    bounce: str = ""  # hard | soft | blocked, for bounced
    provider_message_id: str = ""
    message_id: str = ""  # the Message-ID header
    delivery_id: int | None = None  # known from a VERP return path
    detail: str = ""
    raw: str = ""  # the payload as received, kept for raw_event_retention_days

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if (self.kind == BOUNCED) != (self.bounce in BOUNCE_KINDS):
            raise ValueError("a bounced event, and only one, says hard, soft or blocked")
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")


@dataclass
class EventReport:
    recorded: int = 0
    duplicates: int = 0
    suppressed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)

    def add(self, other: "EventReport") -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.unsubscribed += other.unsubscribed


def record_events(session: Session, settings: Settings, events, now: datetime | None = None) -> EventReport:
    """Store each event once and apply it; the caller commits."""
    now = now or utcnow()
    report = EventReport()
    for event in events:
        _record(session, settings, event, now, report)
    session.flush()
    return report


def _record(session: Session, settings: Settings, event: Event, now: datetime, report: EventReport) -> None:
    from newsletter.audience import erasure

    email = normalised(event.email)
    delivery = find_delivery(session, event)
    if delivery is not None and address_key(delivery.email) == address_key(email):
        email = delivery.email  # as we sent it, whatever case a provider reports
    else:
        email = _as_stored(session, email)
    if erasure.is_erased(session, email):
        # Do not write an erased address back into the database.
        email = hashed_address(email)
    row = {
        "source": event.source, "key": event.key[:300], "kind": event.kind, "bounce": event.bounce,
        "email": email, "delivery_id": delivery.id if delivery else None,
        "message_ref": (event.provider_message_id or event.message_id or event.key)[:300],
        "detail": event.detail[:2000], "raw": event.raw or None,
        "occurred_at": event.occurred_at, "received_at": now,
    }
    if not insert_once(session, ProviderEvent, row, ["source", "key"]):
        report.duplicates += 1  # providers send events twice; the first copy counted
        return
    report.recorded += 1
    if email.startswith(HASH_PREFIX):
        return  # already suppressed for good by the erasure
    _apply(session, settings, event, email, delivery, now, report)


def _apply(session, settings, event: Event, email: str, delivery, now, report: EventReport) -> None:
    why = f"{event.source} {event.kind}" + (f" ({event.bounce})" if event.bounce else "")
    why = f"{why}: {event.detail}"[:200]
    if event.kind == COMPLAINED:
        _suppress(session, email, "complaint", why, report)
    elif event.kind == BOUNCED and event.bounce == HARD:
        _suppress(session, email, "hard_bounce", why, report)
    elif event.kind == BOUNCED and event.bounce == BLOCKED:
        log.info("message blocked by policy; the address is not suppressed", extra={"detail": event.detail[:200]})
    elif event.kind == BOUNCED and soft_bounces(session, settings, email, now) >= settings.soft_bounce_threshold:
        _suppress(session, email, "soft_bounce", f"{settings.soft_bounce_threshold} soft bounces; last {why}"[:200], report)
    elif event.kind == UNSUBSCRIBED:
        _unsubscribe(session, email, delivery, report)


def _as_stored(session: Session, email: str) -> str:
    """The subscriber's own spelling of an address given in another case, so
    one person's events are counted together (soft bounces)."""
    stored = session.scalar(select(Subscriber.email).where(Subscriber.email_key == address_key(email)))
    return stored or email


def soft_bounces(session: Session, settings: Settings, email: str, now: datetime) -> int:
    """How many different messages to ``email`` soft-bounced within the window."""
    since = now - timedelta(days=settings.soft_bounce_window_days)
    return session.scalar(
        select(func.count(func.distinct(ProviderEvent.message_ref))).where(
            ProviderEvent.email == email,
            ProviderEvent.kind == BOUNCED,
            ProviderEvent.bounce == SOFT,
            ProviderEvent.occurred_at >= since,
        )
    )


def _suppress(session: Session, email: str, reason: str, source: str, report: EventReport) -> None:
    if find_suppression(session, email) is None:
        report.suppressed.append(email)
        log.info("address suppressed", extra={"reason": reason})
    add_suppression(session, email, reason, source)


def _unsubscribe(session: Session, email: str, delivery: Delivery | None, report: EventReport) -> None:
    """Someone left through the provider's own link: leave the lists the
    message was sent to, or everything when we cannot tell which message."""
    from newsletter.sending.send_record import list_ids_of
    from newsletter.audience.subscribers import find_subscriber, unsubscribe
    from newsletter.store.models import MailingList

    if find_subscriber(session, email) is None:
        return
    send = session.get(Send, delivery.send_id) if delivery is not None else None
    if send is None:
        unsubscribe(session, email)
    for list_id in list_ids_of(session, send) if send is not None else ():
        unsubscribe(session, email, session.get(MailingList, list_id))
    report.unsubscribed.append(email)


# --- tying events to the ledger --------------------------------------------------


def find_delivery(session: Session, event: Event) -> Delivery | None:
    """The ledger row an event is about: by VERP delivery id, by our
    Message-ID, or by the id the provider gave when it took the message."""
    if event.delivery_id is not None:
        found = session.get(Delivery, event.delivery_id)
        if found is not None:
            return found
    by_message_id = delivery_id_from_message_id(event.message_id)
    if by_message_id is not None:
        found = session.get(Delivery, by_message_id)
        if found is not None and _same_message_id(found.message_id, event.message_id):
            return found
    if event.provider_message_id:
        return session.scalars(
            select(Delivery).where(Delivery.provider_message_id == event.provider_message_id).limit(1)
        ).first()
    return None


def insert_once(session: Session, model, row: dict, unique: list[str]) -> bool:
    """Insert ``row`` unless one with the same unique columns exists; True if inserted.

    (RETURNING, because a driver may not count rows an ON CONFLICT skipped.)
    """
    statement = insert_ignore(session, model, [row], unique).returning(model.id)
    return session.execute(statement).scalar() is not None


def delivery_id_from_message_id(message_id: str) -> int | None:
    match = _OUR_MESSAGE_ID.fullmatch(message_id.strip()) if message_id else None
    return int(match.group(2)) if match else None


def _same_message_id(stored: str, heard: str) -> bool:
    return stored.strip("<> ").lower() == heard.strip("<> ").lower()


def delivery_outcome(session: Session, delivery_id: int) -> str:
    """The worst thing heard of one delivery ("" when nothing was)."""
    kinds = session.scalars(select(ProviderEvent.kind).where(ProviderEvent.delivery_id == delivery_id).distinct()).all()
    return max(kinds, key=PRECEDENCE.__getitem__, default="")


def normalised(email: str) -> str:
    from newsletter.audience.subscribers import normalise_address

    try:
        return normalise_address(email)
    except EmailNotValidError:
        return email.strip().lower()[:320]  # still recorded, so nothing heard is lost


# --- keeping little ----------------------------------------------------------------


@dataclass(frozen=True)
class PurgeReport:
    payloads_emptied: int
    nonces_deleted: int


def purge_old_payloads(session: Session, settings: Settings, now: datetime | None = None) -> PurgeReport:
    """Empty raw payloads past their retention and forget expired webhook nonces.

    Meant for the beat tick or ``newsletter events purge``; safe to repeat.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=settings.raw_event_retention_days)
    emptied = session.execute(
        update(ProviderEvent).where(ProviderEvent.received_at < cutoff, ProviderEvent.raw.is_not(None)).values(raw=None)
    ).rowcount
    # A nonce only matters while its signature is still fresh enough to be accepted.
    stale = now - timedelta(seconds=settings.webhook_max_age_seconds * 2)
    deleted = session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < stale)).rowcount
    return PurgeReport(emptied, deleted)


# --- the suppression list, for operators --------------------------------------------


def list_suppressions(session: Session, reason: str | None = None, limit: int = 50, after: int | None = None) -> list[Suppression]:
    query = select(Suppression).order_by(Suppression.id).limit(limit)
    if reason:
        query = query.where(Suppression.reason == reason)
    if after is not None:
        query = query.where(Suppression.id > after)
    return list(session.scalars(query))


def suppress_manually(session: Session, email: str, note: str = "") -> bool:
    """Add an address by hand; False when it was suppressed already."""
    from newsletter.audience.subscribers import checked_address

    address = checked_address(email)
    if is_suppressed(session, address):
        return False
    add_suppression(session, address, "manual", (note or "added by an operator")[:200])
    return True


def remove_suppression(session: Session, email: str) -> Suppression:
    """Take an address off the suppression list (it may then be added to lists again)."""
    from newsletter.audience import erasure
    from newsletter.audience.subscribers import checked_address

    address = checked_address(email)
    if erasure.is_erased(session, address):
        raise InputError(Problem("field email", f"{address} was erased on request",
                                 "an erased address stays suppressed for good"))
    row = find_suppression(session, address)
    if row is None:
        raise NotFound(f"{address} is not on the suppression list")
    session.delete(row)
    session.flush()
    return row
