"""Fair workers and an error budget judged as results arrive

Revision ID: 0020
Revises: 0019

- ``batches.state`` is read by a run that would wait for its account's rate
  limit ("does another send have a batch waiting for a worker?") and by the
  beat tick (held batches): indexed with ``send_id``.
- ``sends.budget_attempts`` and ``sends.budget_failures`` count the results
  of the send's current error-budget window, across every worker, as each
  chunk is recorded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_batches_state_send_id", "batches", ["state", "send_id"])
    with op.batch_alter_table("sends") as table:
        table.add_column(sa.Column("budget_attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("budget_failures", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.drop_column("budget_failures")
        table.drop_column("budget_attempts")
    op.drop_index("ix_batches_state_send_id", table_name="batches")
