"""INSERT .. ON CONFLICT for the two databases we run on."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, model):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"no INSERT .. ON CONFLICT for {name}")


def insert_ignore(session: Session, model, rows: list[dict], conflict_columns: list[str]):
    """An INSERT that leaves existing rows (by the unique columns) untouched."""
    return dialect_insert(session, model).values(rows).on_conflict_do_nothing(index_elements=conflict_columns)
