"""What people are shown about sends: overview rows built from the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.sending.scheduling import When, when_from_utc
from newsletter.sending.sends import Progress, progress
from newsletter.store.models import IssueRow, MailingList, PublicationRow, Send


@dataclass
class SendRow:
    send_id: int
    publication: str
    issue: str
    list: str
    state: str
    when: When
    progress: Progress


def send_overview(session: Session, *, include_finished: bool = False, limit: int = 50) -> list[SendRow]:
    query = (
        select(Send, IssueRow.slug, MailingList.slug, PublicationRow.slug, PublicationRow.timezone)
        .join(IssueRow, IssueRow.id == Send.issue_id)
        .join(MailingList, MailingList.id == Send.list_id)
        .join(PublicationRow, PublicationRow.id == IssueRow.publication_id)
        .order_by(Send.id.desc())
        .limit(limit)
    )
    if not include_finished:
        query = query.where(Send.state.in_(("scheduled", "sending", "paused")))
    rows = []
    for send, issue_slug, list_slug, publication_slug, tz in session.execute(query).all():
        moment = send.started_at or send.scheduled_at
        rows.append(
            SendRow(send.id, publication_slug, issue_slug, list_slug, send.state, when_from_utc(moment, tz),
                    progress(session, send.id))
        )
    return rows
