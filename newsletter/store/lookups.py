"""A column matched against many values, in SQL each database runs well.

``column.in_(values)`` renders one bound parameter per value. On PostgreSQL
that makes every statement's text depend on how many values it carries, so
neither SQLAlchemy nor psycopg can reuse their work on it: for the ledger's
chunks of a hundred ids, rendering and parsing the statement cost more CPU
than the database spent running it. ``= ANY(array)`` is one parameter and one
statement text, whatever the number of values. SQLite has no arrays: there
``IN`` stays.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement


def among(session: Session, column, values: Iterable) -> ColumnElement[bool]:
    """SQL: ``column`` holds one of ``values``."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def among_param(dialect: str, column, name: str) -> ColumnElement[bool]:
    """``among`` for a statement built once and run many times: the values are
    given at each run as the parameter ``name`` (a list)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def keyset_pages(session: Session, query, id_column) -> Iterator[list]:
    """The rows of ``query`` (ordered by ``id_column`` and limited to a page) a
    page at a time, each page after the last one's id: memory stays flat however
    many rows there are, and a late page costs what the first does (no OFFSET)."""
    after = None
    while True:
        page = session.execute(query if after is None else query.where(id_column > after)).all()
        if not page:
            return
        after = page[-1].id
        yield page
