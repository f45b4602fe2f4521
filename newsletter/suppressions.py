"""The suppression list: addresses never mailed again, whatever their lists say."""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.store.models import Suppression, utcnow
from newsletter.store.upsert import insert_ignore


def add_suppression(session: Session, email: str, reason: str, source: str) -> None:
    """Never send to this address again. An existing entry is kept as it is."""
    row = {"email": email, "reason": reason, "source": source, "created_at": utcnow()}
    session.execute(insert_ignore(session, Suppression, [row], ["email"]))
