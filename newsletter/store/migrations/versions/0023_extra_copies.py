"""Every extra copy counted, and when a batch was last taken by a run

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("extra_copies", sa.Integer(), nullable=False, server_default="0"))
    # A row flagged before copies were counted had at least one copy in doubt.
    op.execute("UPDATE deliveries SET extra_copies = 1 WHERE possible_duplicate")
    op.add_column("batches", sa.Column("taken_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as table:
        table.drop_column("taken_at")
    with op.batch_alter_table("deliveries") as table:
        table.drop_column("extra_copies")
