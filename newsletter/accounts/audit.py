"""The audit log: who did what, when, and from which address.

Every action in the console and the ops dashboard writes one entry in the
same transaction as the action itself, so an entry exists exactly when the
action happened. The issue's page shows its entries.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import AuditEntry


def record(session: Session, actor: str, action: str, detail: str = "", *, client: str = "",
           publication_id: int | None = None, draft_id: int | None = None) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, detail=detail, client=client[:100],
                       publication_id=publication_id, draft_id=draft_id)
    session.add(entry)
    return entry


def entries_for_draft(session: Session, draft_id: int, limit: int = 200) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.draft_id == draft_id)
                                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)))


def recent(session: Session, limit: int = 100) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)))
