"""Every active or recent send as an operator sees it: counts, rate, finish
time, errors grouped by reason, bounces and complaints. All from the ledger."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from newsletter.sending.leases import holder_is_gone, live_holders
from newsletter.sending.send_record import list_labels
from newsletter.sending.lifecycle import LOST_BATCHES_EVENT, progress
from newsletter.store.models import (
    ACTIVE_ROW_STATES,
    ClaimLease, Delivery, IssueRow, MailingList, PublicationRow, RateLimitThrottle, Send, SendEvent, Suppression,
    DeliveryState,
    SendState,
)

RATE_WINDOW = timedelta(seconds=60)
RECENT = timedelta(hours=6)  # finished sends stay on the board this long
LOSS_SHOWN = timedelta(minutes=10)  # batches the broker lost stay a problem this long
SCHEDULED_SHOWN = 5
_GAVE_UP = re.compile(r"^gave up after \d+ attempts: ")
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
_PERMANENT_CODE = re.compile(r"(^|\s)(5\d\d(\s|$)|5\.\d{1,3}\.\d{1,3}\b)")


@dataclass(frozen=True)
class ErrorGroup:
    reason: str
    count: int


@dataclass(frozen=True)
class Throttled:
    """A transport and account that keep asking a send to slow down, with nothing sent."""

    transport: str
    account: str
    waiting: int  # the send's rows waiting for a retry that went through it
    last_error: str
    seconds: float  # nothing of the send went out for at least this long


@dataclass
class SendStatus:
    send_id: int
    publication: str
    issue: str
    list: str
    state: str
    audience: int
    sent: int
    failed: int
    skipped: int
    cancelled: int
    pending: int
    possible_duplicates: int
    orphaned_claims: int  # rows claimed by a run whose lease lapsed or whose process is gone
    rate_per_second: float
    expected_finish_at: datetime | None
    scheduled_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_progress_at: datetime | None
    paused_reason: str
    bounces: int
    complaints: int
    errors: list[ErrorGroup] = field(default_factory=list)
    extra_copies: int = 0  # copies beyond the first that may have reached people: each one counted
    throttled: list[Throttled] = field(default_factory=list)
    lost_batches: str = ""  # what the beat said when it last handed out batches the broker lost, if lately

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped + self.cancelled

    @property
    def bounce_rate(self) -> float:
        attempted = self.sent + self.failed
        return self.bounces / attempted if attempted else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class ScheduledSend:
    send_id: int
    publication: str
    issue: str
    list: str
    scheduled_at: datetime


def _labelled(query):
    return (
        query.join(IssueRow, IssueRow.id == Send.issue_id)
        .join(MailingList, MailingList.id == Send.list_id)
        .join(PublicationRow, PublicationRow.id == IssueRow.publication_id)
    )


def send_statuses(session: Session, now: datetime, limit: int = 20, *,
                  throttled_after: timedelta = timedelta(seconds=60)) -> list[SendStatus]:
    """Sends that are sending or paused, and those that ended in the last hours."""
    query = _labelled(select(Send, PublicationRow.slug, IssueRow.slug, MailingList.slug)).where(
        or_(Send.state.in_((SendState.SENDING, SendState.PAUSED)), and_(Send.state.in_((SendState.FINISHED, SendState.CANCELLED)), Send.finished_at >= now - RECENT))
    ).order_by(Send.id.desc()).limit(limit)
    found = session.execute(query).all()
    lists = list_labels(session, [send.id for send, *_ in found])
    return [send_status(session, send, (publication, issue, lists[send.id]), now, throttled_after=throttled_after)
            for send, publication, issue, _ in found]


def scheduled_sends(session: Session, limit: int = SCHEDULED_SHOWN) -> list[ScheduledSend]:
    query = _labelled(select(Send.id, PublicationRow.slug, IssueRow.slug, MailingList.slug, Send.scheduled_at))
    query = query.where(Send.state == SendState.SCHEDULED).order_by(Send.scheduled_at, Send.id).limit(limit)
    found = session.execute(query).all()
    lists = list_labels(session, [row[0] for row in found])
    return [ScheduledSend(send_id, publication, issue, lists[send_id], at) for send_id, publication, issue, _, at in found]


def send_status(session: Session, send: Send, labels: tuple[str, str, str], now: datetime, *,
                throttled_after: timedelta = timedelta(seconds=60)) -> SendStatus:
    p = progress(session, send.id)
    rate = sending_rate(session, send, now)
    pending = p.pending
    finish = now + timedelta(seconds=pending / rate) if send.state == SendState.SENDING and rate > 0 and pending else None
    errors = error_groups(session, send.id)
    return SendStatus(
        send_id=send.id, publication=labels[0], issue=labels[1], list=labels[2], state=send.state,
        audience=send.audience_size, sent=p.counts.get(DeliveryState.SENT, 0), failed=p.counts.get(DeliveryState.FAILED, 0),
        skipped=p.counts.get(DeliveryState.SKIPPED, 0), cancelled=p.counts.get(DeliveryState.CANCELLED, 0), pending=pending,
        possible_duplicates=p.possible_duplicates, extra_copies=p.extra_copies,
        orphaned_claims=orphaned_claims(session, send.id, now),
        rate_per_second=rate, expected_finish_at=finish, scheduled_at=send.scheduled_at,
        started_at=send.started_at, finished_at=send.finished_at, last_progress_at=send.last_progress_at,
        paused_reason=send.paused_reason, bounces=bounces(session, send),
        complaints=suppressed_since_start(session, send, ("complaint",)),
        errors=errors,
        throttled=throttled_accounts(session, send, now, throttled_after),
        lost_batches=recent_loss(session, send, now),
    )


def sending_rate(session: Session, send: Send, now: datetime) -> float:
    """Messages per second over the last minute (or since the start, if sooner)."""
    if send.started_at is None:
        return 0.0
    since = max(now - RATE_WINDOW, send.started_at)
    seconds = max((now - since).total_seconds(), 1.0)
    sent = session.scalar(
        select(func.count()).select_from(Delivery)
        .where(Delivery.send_id == send.id, Delivery.state == DeliveryState.SENT, Delivery.sent_at > since)
    )
    return (sent or 0) / seconds


def throttled_accounts(session: Session, send: Send, now: datetime, after: timedelta) -> list[Throttled]:
    """The transports and accounts a sending send's rows wait on because the server
    keeps asking to slow down (a 421 or 429 within ``after``), when nothing of the
    send went out for ``after``. Each deferral is an answer, so the send never
    looks stalled; this is what says so."""
    if send.state != SendState.SENDING or send.started_at is None or send.started_at > now - after:
        return []
    since = now - after
    sent = select(Delivery.id).where(Delivery.send_id == send.id, Delivery.state == DeliveryState.SENT, Delivery.sent_at > since)
    if session.scalar(select(sent.exists())):
        return []
    rows = session.execute(
        select(Delivery.transport, Delivery.account, func.count(), RateLimitThrottle.last_error)
        .join(RateLimitThrottle, RateLimitThrottle.account == Delivery.account)
        .where(Delivery.send_id == send.id, Delivery.state == DeliveryState.RETRY, RateLimitThrottle.last_at > since)
        .group_by(Delivery.transport, Delivery.account, RateLimitThrottle.last_error)
    ).all()
    return [Throttled(transport, account, waiting, error, after.total_seconds())
            for transport, account, waiting, error in rows]


def recent_loss(session: Session, send: Send, now: datetime) -> str:
    """What the beat said when it last handed out batches of this send that the broker lost, if lately."""
    if send.state not in (SendState.SENDING, SendState.PAUSED):
        return ""
    detail = session.scalar(
        select(SendEvent.detail).where(SendEvent.send_id == send.id, SendEvent.kind == LOST_BATCHES_EVENT,
                                       SendEvent.created_at > now - LOSS_SHOWN)
        .order_by(SendEvent.id.desc()).limit(1)
    )
    return detail or ""


def orphaned_claims(session: Session, send_id: int, now: datetime) -> int:
    """Rows claimed by a run that no longer holds them: its lease lapsed (its
    worker died, was stuck for CLAIM_TIMEOUT_SECONDS, or lost the database), or
    its process is gone from this host.

    The beat hands their batch out again once per lease (lifecycle.batches_to_requeue),
    and the worker that claims it takes them over.
    """
    held = session.execute(
        select(Delivery.claimed_by, func.count())
        .where(Delivery.send_id == send_id, Delivery.state.in_(ACTIVE_ROW_STATES))
        .group_by(Delivery.claimed_by)
    ).all()
    if not held:
        return 0
    live = set(session.scalars(live_holders(now).where(ClaimLease.holder.in_([h for h, _ in held]))).all())
    return sum(count for holder, count in held if holder not in live or holder_is_gone(holder))


def error_groups(session: Session, send_id: int, shown: int = 5) -> list[ErrorGroup]:
    """Why rows failed or wait for a retry, most common reason first."""
    counts = Counter()
    for text, count in _error_texts(session, send_id, (DeliveryState.FAILED, DeliveryState.RETRY)):
        counts[error_reason(text)] += count
    return [ErrorGroup(reason, count) for reason, count in counts.most_common(shown)]


def _error_texts(session: Session, send_id: int, states: tuple[str, ...]):
    return session.execute(
        select(Delivery.last_error, func.count())
        .where(Delivery.send_id == send_id, Delivery.state.in_(states), Delivery.last_error != "")
        .group_by(Delivery.last_error)
    ).all()


def error_reason(text: str) -> str:
    """One reason for many rows: the attempt count and the address taken out."""
    reason = _ADDRESS.sub("<address>", _GAVE_UP.sub("", text.strip()))
    return reason[:160]


def is_permanent_failure(text: str) -> bool:
    return bool(_PERMANENT_CODE.search(_GAVE_UP.sub("", text)))


def bounces(session: Session, send: Send) -> int:
    """Failed rows the server refused for good (5xx / 5.x.x), plus hard bounces
    reported later for this send's recipients."""
    failed = sum(count for text, count in _error_texts(session, send.id, (DeliveryState.FAILED,)) if is_permanent_failure(text))
    # A hard bounce found at sending time is both a failed row and a suppression.
    later = suppressed_since_start(session, send, ("hard_bounce",), exclude_failed=True)
    return failed + later


def suppressed_since_start(session: Session, send: Send, reasons: tuple[str, ...], exclude_failed: bool = False) -> int:
    if send.started_at is None:
        return 0
    query = (
        select(func.count()).select_from(Suppression)
        .join(Delivery, and_(Suppression.email == func.lower(Delivery.email), Delivery.send_id == send.id))
        .where(Suppression.reason.in_(reasons), Suppression.created_at >= send.started_at)
    )
    if exclude_failed:
        query = query.where(Delivery.state != DeliveryState.FAILED)
    return session.scalar(query) or 0
