"""Bring a database's schema up to date."""

from __future__ import annotations

from newsletter.store.db import engine_for
from newsletter.store.models import Base


def upgrade(url: str) -> None:
    # Replaced by Alembic's upgrade to head once the first migration exists.
    Base.metadata.create_all(engine_for(url))
