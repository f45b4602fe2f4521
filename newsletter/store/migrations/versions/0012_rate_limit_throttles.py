"""Rate limits belong to the account: how often each account was throttled

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_throttles",
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("throttles", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_throttles")
