"""Leases on claimed ledger rows, renewed by the batch run that holds them

Revision ID: 0009
Revises: 0008

A row claimed by a run whose lease has expired is taken over by the next
worker, whatever host the holder ran on (newsletter/sending/leases.py). Rows claimed
before this migration have no lease, so they are taken over at once: stop the
workers before upgrading, as for every migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim_leases",
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("taken_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("holder"),
    )
    op.create_index("ix_claim_leases_expires_at", "claim_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_claim_leases_expires_at", table_name="claim_leases")
    op.drop_table("claim_leases")
