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


def test_the_one_copy_migration_gives_each_ledger_row_its_issue_and_marks_earlier_extra_copies(database_url):
    """Sends made one per list gave some people an issue twice: after the upgrade the first
    copy holds the issue and the later one is marked as a resend, so the rule can hold."""
    from alembic import command
    from sqlalchemy.orm import Session

    from newsletter.sending import scheduling
    from tests.sending.world import make_world

    upgrade(database_url)
    with Session(engine_for(database_url)) as session:
        _pub, everyone, issue = make_world(session, 3)
        first = scheduling.schedule_send(session, issue, everyone, None).id
        second = scheduling.schedule_send(session, issue, everyone, None).id
        session.commit()
        issue_id = issue.id
    scripts = ScriptDirectory.from_config(alembic_config(""))
    ours = next(s for s in scripts.walk_revisions() if "one_copy_per_issue" in s.path)
    with engine_for(database_url).begin() as connection:
        command.downgrade(alembic_config(database_url, connection), ours.down_revision)
    with engine_for(database_url).begin() as connection:
        ids = connection.execute(text("SELECT id FROM subscribers ORDER BY id")).scalars().all()
        for send_id, subscriber_id, state in ((first, ids[0], "sent"), (first, ids[1], "sent"),
                                              (first, ids[2], "cancelled"), (second, ids[0], "sent"),
                                              (second, ids[2], "pending")):
            connection.execute(text(
                "INSERT INTO deliveries (send_id, subscriber_id, email, state, attempts, last_error, message_id,"
                " provider_message_id, claimed_by, possible_duplicate, transport, account, updated_at)"
                " VALUES (:send, :subscriber, 'x@example.com', :state, 0, '', '', '', '', false, '', '', CURRENT_TIMESTAMP)"
            ), {"send": send_id, "subscriber": subscriber_id, "state": state})

    upgrade(database_url)

    with engine_for(database_url).connect() as connection:
        rows = connection.execute(text("SELECT send_id, subscriber_id, issue_id, resend FROM deliveries ORDER BY id")).all()
    assert {row.issue_id for row in rows} == {issue_id}
    assert [(row.send_id, row.subscriber_id, bool(row.resend)) for row in rows] == [
        (first, ids[0], False), (first, ids[1], False), (first, ids[2], False),
        (second, ids[0], True), (second, ids[2], False),
    ]
    assert schema_differences(database_url) == []
