"""Click counts by send, link, hour and class; distinct messages by nonce; web copy page views; per-person click history

Revision ID: 0018
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0018"
down_revision = "0014"
branch_labels = None
depends_on = None


def _class_columns() -> list[sa.Column]:
    return [sa.Column(name, sa.Integer(), nullable=False) for name in ("human", "machine", "unsure")]


def upgrade() -> None:
    op.create_table(
        "click_counts",
        sa.Column("send_id", ID, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("hour", UTC_DATETIME, nullable=False),
        *_class_columns(),
        sa.PrimaryKeyConstraint("send_id", "link", "hour"),
    )
    op.create_table(
        "click_messages",
        sa.Column("send_id", ID, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
        sa.Column("nonce", sa.String(16), nullable=False),
        *_class_columns(),
        sa.PrimaryKeyConstraint("send_id", "nonce"),
    )
    op.create_table(
        "page_views",
        sa.Column("publication_id", ID, sa.ForeignKey("publications.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("publication_id", "path", "day"),
    )
    op.create_table(
        "click_history",
        sa.Column("id", ID, nullable=False),
        sa.Column("subscriber_id", ID, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("send_id", ID, sa.ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("clicked_at", UTC_DATETIME, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_click_history_subscriber", "click_history", ["subscriber_id", "clicked_at"])
    op.create_index("ix_click_history_send_id", "click_history", ["send_id"])


def downgrade() -> None:
    op.drop_table("click_history")
    op.drop_table("page_views")
    op.drop_table("click_messages")
    op.drop_table("click_counts")
