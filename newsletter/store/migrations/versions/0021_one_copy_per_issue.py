"""One copy of an issue per person, across all the issue's sends; explicit resends

Revision ID: 0021
Revises: 0020

Each ledger row now carries its send's issue, and a partial unique index keeps
one row per issue and person among the rows that give the person the issue
(every row but an explicit resend, a skipped or a cancelled one: HOLDS_ISSUE in
the models). A send scheduled with ``--resend`` marks its rows for people who
already had the issue as resends.

Existing rows get their send's issue. Where a person already had an issue more
than once (sends made one per list before this), the first row keeps the issue
and the later ones are marked as resends: they were extra copies, and are kept
as they are. Stop the workers before upgrading, as for every migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HOLDS_ISSUE = "NOT resend AND state NOT IN ('cancelled', 'skipped')"

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("resend", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("deliveries", sa.Column("resend", sa.Boolean(), nullable=False, server_default=sa.false()))
    # NOT NULL from the start (SQLite cannot add it later without copying the table,
    # which rows of provider_events referring to the ledger would forbid).
    op.add_column("deliveries", sa.Column("issue_id", ID, nullable=False, server_default="0"))
    op.execute("UPDATE deliveries SET issue_id = (SELECT sends.issue_id FROM sends WHERE sends.id = deliveries.send_id)")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("deliveries", "issue_id", server_default=None)  # a freeze always gives it
    op.execute(
        "UPDATE deliveries SET resend = true WHERE id IN ("
        " SELECT id FROM ("
        "  SELECT id, row_number() OVER (PARTITION BY issue_id, subscriber_id ORDER BY id) AS copy"
        "  FROM deliveries WHERE subscriber_id IS NOT NULL AND state NOT IN ('cancelled', 'skipped')"
        " ) AS numbered WHERE copy > 1)"
    )
    op.create_index("uq_deliveries_issue_subscriber", "deliveries", ["issue_id", "subscriber_id"], unique=True,
                    postgresql_where=sa.text(HOLDS_ISSUE), sqlite_where=sa.text(HOLDS_ISSUE))


def downgrade() -> None:
    op.drop_index("uq_deliveries_issue_subscriber", table_name="deliveries")
    op.drop_column("deliveries", "issue_id")
    op.drop_column("deliveries", "resend")
    op.drop_column("sends", "resend")
