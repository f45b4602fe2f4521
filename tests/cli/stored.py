"""What the commands left in the database the ``cli`` fixture's environment names."""

from __future__ import annotations

from sqlalchemy import func, select

from newsletter.config import get_settings
from newsletter.store.db import session_scope


def count(model) -> int:
    with session_scope(get_settings()) as session:
        return session.scalar(select(func.count()).select_from(model))
