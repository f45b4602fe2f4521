"""Engines and sessions for the configured database."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import make_folder


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            make_folder(Path(path).parent, "NEWSLETTER_DATA_DIR (or DATABASE_URL)")
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets beat, workers and the CLI read while one of them writes.
            # Let SQLAlchemy, not pysqlite, emit BEGIN (see below).
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # Take the write lock at BEGIN, so a read-then-write transaction never
        # fails half way with "database is locked".
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def get_engine(settings=None) -> Engine:
    from newsletter.config import get_settings

    settings = settings or get_settings()
    return engine_for(settings.effective_database_url)


@contextmanager
def session_scope(settings=None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    from newsletter.config import get_settings

    settings = settings or get_settings()
    session = _session_factory(settings.effective_database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
