"""Alembic's entry point: run migrations on the connection ``migrate.py`` hands over.

There is no alembic.ini; ``newsletter.store.migrate`` builds the configuration
and passes an open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from newsletter.store.db import make_engine
from newsletter.store.models import Base, UTCDateTime

# Any fixed number: every process that migrates PostgreSQL takes the same lock.
POSTGRES_MIGRATION_LOCK = 7_403_915

config = context.config
target_metadata = Base.metadata


def render_item(kind, obj, _autogen_context):
    """Write UTCDateTime as the column type it stores, so scripts never import the models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Workers, beat and the CLI may all start at once after a deploy;
            # one migrates, the others wait and then find nothing to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK})
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    # Started by the alembic command itself (e.g. to autogenerate a revision).
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_online()
