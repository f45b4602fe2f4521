"""What happened to an issue's sends: the numbers `newsletter ops status` shows,
and what followed (bounces, complaints, people who left), from the ledger."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.ops.sends import SendStatus, error_groups, send_status
from newsletter.sending.send_record import list_ids_of, list_labels
from newsletter.store.models import (
    Delivery,
    DeliveryState,
    Draft,
    IssueRow,
    MailingList,
    Membership,
    PublicationRow,
    Send,
    Subscriber,
    utcnow,
)


@dataclass(frozen=True)
class SendResult:
    status: SendStatus  # what `newsletter ops status` says of this send
    list_name: str
    failed_by_reason: list[tuple[str, int]]
    unsubscribed_after: int  # recipients who left the list (or everything) after it started


def results(session: Session, settings: Settings, draft: Draft) -> list[SendResult]:
    if draft.issue_id is None:
        return []
    now = utcnow()
    rows = session.execute(
        select(Send, PublicationRow.slug, IssueRow.slug)
        .join(IssueRow, IssueRow.id == Send.issue_id)
        .join(PublicationRow, PublicationRow.id == IssueRow.publication_id)
        .where(Send.issue_id == draft.issue_id).order_by(Send.id)
    ).all()
    labels = list_labels(session, [send.id for send, *_ in rows])
    return [SendResult(send_status(session, send, (pub, issue, labels[send.id]), now),
                       list_names(session, send), [(g.reason, g.count) for g in error_groups(session, send.id, shown=20)],
                       unsubscribed_after(session, send))
            for send, pub, issue in rows]


def list_names(session: Session, send: Send) -> str:
    """The names of the lists a send went to, "Staff, Board" for a send to several."""
    ids = list_ids_of(session, send)
    names = dict(session.execute(select(MailingList.id, MailingList.name).where(MailingList.id.in_(ids))).all())
    return ", ".join(names[i] for i in ids)


def unsubscribed_after(session: Session, send: Send) -> int:
    if send.started_at is None:
        return 0
    list_ids = list_ids_of(session, send)
    left = or_(and_(Membership.list_id.in_(list_ids), Membership.status == "unsubscribed",
                    Membership.updated_at >= send.started_at),
               and_(Subscriber.status == "unsubscribed", Subscriber.updated_at >= send.started_at))
    return session.scalar(
        select(func.count(func.distinct(Delivery.subscriber_id)))
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Membership, and_(Membership.subscriber_id == Subscriber.id, Membership.list_id.in_(list_ids)))
        .where(Delivery.send_id == send.id, Delivery.state == DeliveryState.SENT, left)
    ) or 0


def failures_csv(session: Session, draft: Draft) -> str:
    """Every recipient whose delivery failed, with why: one row each, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["send", "list", "email", "attempts", "error"])
    if draft.issue_id is not None:
        rows = session.execute(
            select(Send.id, Delivery.email, Delivery.attempts, Delivery.last_error)
            .join(Send, Send.id == Delivery.send_id)
            .where(Send.issue_id == draft.issue_id, Delivery.state == DeliveryState.FAILED).order_by(Send.id, Delivery.id)
        ).all()
        labels = list_labels(session, sorted({row[0] for row in rows}))
        for send_id, *rest in rows:
            writer.writerow([_cell(str(v)) for v in (send_id, labels[send_id], *rest)])
    return out.getvalue()


def _cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula (OWASP's CSV injection advice)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
