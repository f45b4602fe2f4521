"""Each publication sends as itself: its sending block, and who sent each ledger row

Revision ID: 0011
Revises: 0010

``publications.sending`` holds the non-secret part of a publication's
``sending:`` block (secrets are named there, never held). Each ledger row
records the transport and the account it was handed to; rows sent before
this revision have neither. ``sends.allow_private_links`` records that an
operator let a real send go out with links that are not https and public.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, which SQLite does in place: a batch copy of `sends`
    # would have to drop a table other tables' foreign keys point at.
    op.add_column("publications", sa.Column("sending", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("deliveries", sa.Column("transport", sa.String(20), nullable=False, server_default=""))
    op.add_column("deliveries", sa.Column("account", sa.String(200), nullable=False, server_default=""))
    op.add_column("sends", sa.Column("allow_private_links", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("allow_private_links")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("account")
        batch.drop_column("transport")
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("sending")
