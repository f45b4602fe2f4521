"""Queue depth samples for the dashboard's chart

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_samples",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("depths", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_queue_samples_at", "queue_samples", ["at"])


def downgrade() -> None:
    op.drop_index("ix_queue_samples_at", table_name="queue_samples")
    op.drop_table("queue_samples")
