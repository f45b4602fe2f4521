"""The database's clock.

Time that decides who holds what (a lease, a retry that is due, a batch the
broker lost, a send that is due, "now" in an operator's command) and the
times written in the ledger are the database's, never a
host's: one host whose clock runs fast must not take rows from a live worker,
nor write a ``sent_at`` in the future. Leases are judged inside the SQL that
claims and renews them (``now_sql``, ``later_sql``); a time that is written
after a decision is read once (``read``).

``now``, where a caller gives one, stands for the clock (tests that move time on).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from newsletter.store.models import UTCDateTime

# SQLite's "now" with microseconds as SQLAlchemy writes them (it keeps milliseconds),
# so that times it writes compare as text with times written from Python.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"


def now_sql(session: Session, now: datetime | None = None) -> ColumnElement:
    """SQL for the database's time at this statement (or ``now``, when given)."""
    if now is not None:
        return literal(now, UTCDateTime())
    return now_in(_dialect(session))


def later_sql(session: Session, seconds: float, now: datetime | None = None) -> ColumnElement:
    """SQL for ``seconds`` after the database's time at this statement (or after ``now``)."""
    if now is not None:
        return literal(now + timedelta(seconds=seconds), UTCDateTime())
    return later_in(_dialect(session), seconds)


# For statements built once per database and run many times (sending/chunk_sql.py).

def now_in(dialect: str) -> ColumnElement:
    """SQL for the database's time at this statement, on ``dialect`` ("sqlite", "postgresql")."""
    if dialect == "sqlite":
        return type_coerce(func.strftime(_SQLITE_FORMAT, "now"), UTCDateTime())
    # Not now(): that is when the transaction began, which may be long before.
    return type_coerce(func.statement_timestamp(), UTCDateTime())


def later_in(dialect: str, seconds) -> ColumnElement:
    """SQL for ``seconds`` (a number, or a bound parameter of one) after the database's
    time at this statement, on ``dialect``."""
    if dialect == "sqlite":
        modifier = (f"{seconds:+.6f} seconds" if isinstance(seconds, (int, float))
                    else func.printf("%+.6f seconds", seconds))
        return type_coerce(func.strftime(_SQLITE_FORMAT, "now", modifier), UTCDateTime())
    return type_coerce(func.statement_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, seconds), UTCDateTime())


def read(session: Session, now: datetime | None = None) -> datetime:
    """The database's time now (or ``now``, when given), as an aware UTC datetime."""
    if now is not None:
        return now
    return session.scalar(select(now_sql(session)))


class Carried:
    """The database's time, read once and carried on by this process's monotonic
    clock: for a time asked once per message (which DKIM key signs it), where a
    query each time would cost more than the message. A host whose wall clock
    is wrong, or is stepped by NTP meanwhile, changes nothing."""

    def __init__(self, session: Session, now: datetime | None = None):
        self._read, self._at = read(session, now), time.monotonic()

    def now(self) -> datetime:
        return self._read + timedelta(seconds=time.monotonic() - self._at)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name
