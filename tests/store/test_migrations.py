"""The migrations build the schema the models describe, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from newsletter.store.db import engine_for
from newsletter.store.migrate import alembic_config, current_revision, head_revision, upgrade
from newsletter.store.models import Base


def schema_differences(url: str) -> list:
    with engine_for(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrading_an_empty_database_gives_the_schema_of_the_models(database_url):
    upgrade(database_url)

    # A model changed without a migration shows up here as a difference.
    assert schema_differences(database_url) == []
    tables = set(inspect(engine_for(database_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert current_revision(database_url) == head_revision()


def test_upgrading_twice_changes_nothing_and_keeps_the_data(database_url):
    upgrade(database_url)
    with engine_for(database_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO suppressions (email, reason, source, created_at) "
                "VALUES ('kept@example.com', 'manual', 'test', CURRENT_TIMESTAMP)"
            )
        )

    upgrade(database_url)

    with engine_for(database_url).connect() as connection:
        emails = connection.execute(text("SELECT email FROM suppressions")).scalars().all()
    assert emails == ["kept@example.com"]
    assert schema_differences(database_url) == []


def test_the_migration_history_has_a_single_head():
    # Two branches each adding a revision on the same parent would give two heads,
    # and "upgrade head" would refuse to run.
    scripts = ScriptDirectory.from_config(alembic_config(""))
    assert len(scripts.get_heads()) == 1
