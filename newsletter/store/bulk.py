"""Many rows at once on both databases: a CSV import's chunks, written and looked up.

On PostgreSQL a chunk travels as one parameter (a JSON document of its rows)
in one statement; look-ups by key use ``lookups.among`` (one array). The obvious ways cost a round trip
and a server-side execution per row (the driver's executemany), or a bind
placeholder per value that the driver parses again for every chunk
(``IN (...)``). On SQLite, which runs in this process, the plain forms are
already fast. Either way tables are used, not the ORM: no objects, no
identity map.
"""

from __future__ import annotations

import json

from sqlalchemy import bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from newsletter.store.upsert import dialect_insert


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_many_ignoring(session: Session, model, rows: list[dict], unique_columns: list[str], same: dict | None = None) -> None:
    """INSERT rows (dicts with the same keys), keeping any row already there by
    ``unique_columns`` (``upsert.insert_ignoring`` for a whole chunk). ``same``:
    values every row has (a status, a time), given once.

    PostgreSQL: INSERT .. SELECT FROM jsonb_to_recordset(the rows as JSON),
    each column read as the table's type.
    """
    if not rows:
        return
    table, same = model.__table__, same or {}
    statement = dialect_insert(session, table).on_conflict_do_nothing(index_elements=unique_columns)
    if not _postgres(session):
        session.connection().execute(statement, [{**row, **same} for row in rows] if same else rows)
        return
    names = list(rows[0])
    document = cast(bindparam("rows", json.dumps(rows), type_=Text), postgresql.JSONB)
    source = (func.jsonb_to_recordset(document)
              .table_valued(*(column(name, table.c[name].type) for name in names))
              .render_derived(with_types=True))
    given = [bindparam(f"same_{name}", value, type_=table.c[name].type) for name, value in same.items()]
    values = select(*(source.c[name] for name in names), *given)
    session.connection().execute(statement.from_select([*names, *same], values))
