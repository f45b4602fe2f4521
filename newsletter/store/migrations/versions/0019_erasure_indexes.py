"""Erasing one person without reading the whole ledger; console imports that give up

Revision ID: 0019
Revises: 0018

Erasure (audience/erasure.py) finds a person's ledger rows by subscriber, and
those whose subscriber is gone by the address in any case (a partial index:
a row enters it only when its subscriber is deleted, so a freeze pays
nothing for it), their memberships by subscriber, and deleting the
subscriber sets their ledger rows' subscriber to NULL: without these indexes
each of those read every row (bench/erasure.py: the figures are in
bench/README.md). ``import_jobs.tries`` counts the runs of a console import,
which gives up after a few (console/imports.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])
    orphans = sa.text("subscriber_id IS NULL")  # rows whose subscriber is gone: none at freeze time
    op.create_index("ix_deliveries_orphan_email", "deliveries", [sa.text("lower(email)")],
                    sqlite_where=orphans, postgresql_where=orphans)
    op.create_index("ix_memberships_subscriber_id", "memberships", ["subscriber_id"])
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("tries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("tries")
    op.drop_index("ix_memberships_subscriber_id", table_name="memberships")
    op.drop_index("ix_deliveries_orphan_email", table_name="deliveries")
    op.drop_index("ix_deliveries_subscriber_id", table_name="deliveries")
