"""INSERT .. ON CONFLICT for the two databases we run on."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, model):
    """The dialect's INSERT, which knows ON CONFLICT (both spell it alike)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"SQLite and PostgreSQL are supported, not {dialect}")


def insert_ignoring(session: Session, model, unique_columns: list[str]):
    """An INSERT that keeps a row already there (by the unique columns), e.g. one
    added meanwhile by someone else. Execute it with a list of row dicts."""
    return dialect_insert(session, model).on_conflict_do_nothing(index_elements=unique_columns)


def insert_ignore(session: Session, model, rows: list[dict], conflict_columns: list[str]):
    """``insert_ignoring`` with its rows bound, for a single statement."""
    return insert_ignoring(session, model, conflict_columns).values(rows)
