"""A send's record: its row, its lists, its publication, and the history of what
happened to it.

Scheduling writes the record when a send is put on the calendar or moved;
the beat and the batch runs read the send's lists and add to its history as
it goes out (a pause, the end). Both use this module, so the path of a batch
never climbs back up into scheduling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.errors import NotFound
from newsletter.store.models import IssueRow, MailingList, PublicationRow, Send, SendEvent, SendList, SendState, utcnow

log = logging.getLogger(__name__)


def record_send_event(session: Session, send_id: int, kind: str, detail: str = "") -> None:
    """Add a line to the send's history (``newsletter sends show``, the ops dashboard)."""
    session.add(SendEvent(send_id=send_id, kind=kind, detail=detail))


def get_send(session: Session, send_id: int, *, lock: bool = False) -> Send:
    query = select(Send).where(Send.id == send_id)
    if lock:
        query = query.with_for_update()
    send = session.scalars(query).one_or_none()
    if send is None:
        raise NotFound(f"there is no send {send_id}; `newsletter sends list` shows them")
    return send


def pause_send(session: Session, send_id: int, reason: str) -> bool:
    """Pause a send that is sending, with its reason in its history; whether it was."""
    paused = session.execute(
        update(Send).where(Send.id == send_id, Send.state == SendState.SENDING)
        .values(state=SendState.PAUSED, paused_reason=reason[:2000], updated_at=utcnow())
    ).rowcount
    if paused:
        record_send_event(session, send_id, "paused", reason[:2000])
        log.error("send paused", extra={"send_id": send_id, "reason": reason})
    return bool(paused)


def publication_of(session: Session, send: Send) -> PublicationRow:
    return session.scalars(
        select(PublicationRow).join(IssueRow, IssueRow.publication_id == PublicationRow.id).where(IssueRow.id == send.issue_id)
    ).one()


def list_ids_of(session: Session, send: Send) -> list[int]:
    """The lists a send goes to (sends made before there could be several have one)."""
    found = session.scalars(select(SendList.list_id).where(SendList.send_id == send.id).order_by(SendList.id)).all()
    return list(found) or [send.list_id]


def header_list_of(session: Session, send: Send) -> MailingList | None:
    """The list a send's List-Id names: its list when it goes to one, else None, and
    the List-Id is the publication's own (``send_template.message_template``): a message that goes
    to people on several lists, each once, is not one list's more than another's."""
    list_ids = list_ids_of(session, send)
    return session.get(MailingList, list_ids[0]) if len(list_ids) == 1 else None


def list_slugs_of(session: Session, send_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each send's lists, by slug, in the order they were given (for people to read)."""
    found: dict[int, list[str]] = {}
    rows = session.execute(
        select(SendList.send_id, MailingList.slug).join(MailingList, MailingList.id == SendList.list_id)
        .where(SendList.send_id.in_(send_ids)).order_by(SendList.send_id, SendList.id)
    ).all()
    for send_id, slug in rows:
        found.setdefault(send_id, []).append(slug)
    missing = [i for i in send_ids if i not in found]  # sends made before there could be several
    if missing:
        for send_id, slug in session.execute(
            select(Send.id, MailingList.slug).join(MailingList, MailingList.id == Send.list_id).where(Send.id.in_(missing))
        ).all():
            found[send_id] = [slug]
    return found


def list_labels(session: Session, send_ids: Sequence[int]) -> dict[int, str]:
    """Each send's lists as people read them: "staff", or "staff, board" for a send to several."""
    return {send_id: ", ".join(slugs) for send_id, slugs in list_slugs_of(session, send_ids).items()}
