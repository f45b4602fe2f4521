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

from typing import Iterable

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
