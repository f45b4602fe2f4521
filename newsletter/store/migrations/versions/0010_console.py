"""The comms console: accounts with roles, server-side sessions, the audit log, drafts

Revision ID: 0010
Revises: 0009

Operators made before this revision keep every power they had: they become admins.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admins") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("disabled_at", UTC_DATETIME, nullable=True))
    op.create_table(
        "account_roles",
        sa.Column("id", ID, nullable=False),
        sa.Column("admin_id", ID, sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("publication_id", ID, sa.ForeignKey("publications.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("admin_id", "publication_id", "role"),
    )
    op.create_index("ix_account_roles_admin_id", "account_roles", ["admin_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("admin_id", ID, sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_web_sessions_admin_id", "web_sessions", ["admin_id"])
    op.create_table(
        "login_clients",
        sa.Column("id", ID, nullable=False),
        sa.Column("admin_id", ID, sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_key", sa.String(64), nullable=False),
        sa.Column("last_login_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("admin_id", "client_key"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("publication_id", sa.Integer(), nullable=True),
        sa.Column("draft_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_draft_id", "audit_log", ["draft_id"])
    op.create_table(
        "drafts",
        sa.Column("id", ID, nullable=False),
        sa.Column("publication_id", ID, sa.ForeignKey("publications.id"), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("state", sa.String(30), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("editors", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("submitted_by", sa.String(320), nullable=False),
        sa.Column("approved_by", sa.String(320), nullable=False),
        sa.Column("rejection", sa.Text(), nullable=False),
        sa.Column("issue_id", ID, sa.ForeignKey("issues.id"), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("publication_id", "slug"),
    )
    op.create_table(
        "draft_files",
        sa.Column("id", ID, nullable=False),
        sa.Column("draft_id", ID, sa.ForeignKey("drafts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(320), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("draft_id", "name"),
    )
    op.create_index("ix_draft_files_draft_id", "draft_files", ["draft_id"])
    op.create_table(
        "publication_files",
        sa.Column("id", ID, nullable=False),
        sa.Column("publication_id", ID, sa.ForeignKey("publications.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("publication_id", "name"),
    )


def downgrade() -> None:
    for table in ("publication_files", "draft_files", "drafts", "audit_log", "login_clients", "web_sessions",
                  "account_roles"):
        op.drop_table(table)
    with op.batch_alter_table("admins") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("is_admin")
