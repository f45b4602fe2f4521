"""What people are shown about sends: overview rows built from the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.sending.scheduling import When, when_from_utc
from newsletter.sending.send_record import list_labels
from newsletter.sending.lifecycle import Progress, progress
from newsletter.store.models import IssueRow, PublicationRow, Send, SendState


@dataclass
class SendRow:
    send_id: int
    publication: str
    issue: str
    list: str  # its lists' slugs, "a, b" for a send to several
    state: str
    when: When
    progress: Progress


def send_overview(session: Session, *, include_finished: bool = False, limit: int = 50) -> list[SendRow]:
    query = (
        select(Send, IssueRow.slug, PublicationRow.slug, PublicationRow.timezone)
        .join(IssueRow, IssueRow.id == Send.issue_id)
        .join(PublicationRow, PublicationRow.id == IssueRow.publication_id)
        .order_by(Send.id.desc())
        .limit(limit)
    )
    if not include_finished:
        query = query.where(Send.state.in_((SendState.SCHEDULED, SendState.SENDING, SendState.PAUSED)))
    found = session.execute(query).all()
    lists = list_labels(session, [send.id for send, *_ in found])
    rows = []
    for send, issue_slug, publication_slug, tz in found:
        moment = send.started_at or send.scheduled_at
        rows.append(
            SendRow(send.id, publication_slug, issue_slug, lists[send.id], send.state,
                    when_from_utc(moment, tz), progress(session, send.id))
        )
    return rows
