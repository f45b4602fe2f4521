"""Every table of the first release

Revision ID: 0001
Revises: (none)
Created: 2026-11-22 11:08:32.253582
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Spelled out here, not imported from the models: a migration must keep meaning
# what it meant when it was written, whatever the models say later.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # rowid on SQLite
UTC_DATETIME = sa.DateTime(timezone=True)  # models.UTCDateTime stores this

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('publications',
    sa.Column('id', ID, nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('from_name', sa.String(length=200), nullable=False),
    sa.Column('from_email', sa.String(length=320), nullable=False),
    sa.Column('reply_to', sa.String(length=320), nullable=False),
    sa.Column('postal_address', sa.Text(), nullable=False),
    sa.Column('web_base_url', sa.String(length=500), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=35), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('subscribers',
    sa.Column('id', ID, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.Column('updated_at', UTC_DATETIME, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('suppressions',
    sa.Column('id', ID, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('issues',
    sa.Column('id', ID, nullable=False),
    sa.Column('publication_id', ID, nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('preheader', sa.String(length=300), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('mjml', sa.Text(), nullable=False),
    sa.Column('web_html', sa.Text(), nullable=False),
    sa.Column('articles', sa.JSON(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source_folder', sa.Text(), nullable=False),
    sa.Column('built_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['publication_id'], ['publications.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('publication_id', 'slug')
    )
    op.create_table('lists',
    sa.Column('id', ID, nullable=False),
    sa.Column('publication_id', ID, nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['publication_id'], ['publications.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('publication_id', 'slug')
    )
    op.create_table('memberships',
    sa.Column('id', ID, nullable=False),
    sa.Column('list_id', ID, nullable=False),
    sa.Column('subscriber_id', ID, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.Column('updated_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['list_id'], ['lists.id'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('list_id', 'subscriber_id')
    )
    op.create_index('ix_memberships_list_status_subscriber', 'memberships', ['list_id', 'status', 'subscriber_id'], unique=False)

    op.create_table('sends',
    sa.Column('id', ID, nullable=False),
    sa.Column('issue_id', ID, nullable=False),
    sa.Column('list_id', ID, nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('scheduled_at', UTC_DATETIME, nullable=False),
    sa.Column('started_at', UTC_DATETIME, nullable=True),
    sa.Column('finished_at', UTC_DATETIME, nullable=True),
    sa.Column('audience_size', sa.Integer(), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=False),
    sa.Column('paused_reason', sa.Text(), nullable=False),
    sa.Column('last_progress_at', UTC_DATETIME, nullable=True),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.Column('updated_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ),
    sa.ForeignKeyConstraint(['list_id'], ['lists.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sends_state_scheduled_at', 'sends', ['state', 'scheduled_at'], unique=False)

    op.create_table('batches',
    sa.Column('id', ID, nullable=False),
    sa.Column('send_id', ID, nullable=False),
    sa.Column('first_delivery_id', ID, nullable=False),
    sa.Column('last_delivery_id', ID, nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('enqueued_at', UTC_DATETIME, nullable=False),
    sa.Column('times_enqueued', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['send_id'], ['sends.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('send_id', 'first_delivery_id')
    )
    op.create_index('ix_batches_send_id', 'batches', ['send_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', ID, nullable=False),
    sa.Column('send_id', ID, nullable=False),
    sa.Column('subscriber_id', ID, nullable=True),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('message_id', sa.String(length=300), nullable=False),
    sa.Column('provider_message_id', sa.String(length=300), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=False),
    sa.Column('claimed_at', UTC_DATETIME, nullable=True),
    sa.Column('next_attempt_at', UTC_DATETIME, nullable=True),
    sa.Column('sent_at', UTC_DATETIME, nullable=True),
    sa.Column('possible_duplicate', sa.Boolean(), nullable=False),
    sa.Column('updated_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['send_id'], ['sends.id'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('send_id', 'subscriber_id')
    )
    op.create_index('ix_deliveries_send_state', 'deliveries', ['send_id', 'state'], unique=False)

    op.create_table('send_events',
    sa.Column('id', ID, nullable=False),
    sa.Column('send_id', ID, nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', UTC_DATETIME, nullable=False),
    sa.ForeignKeyConstraint(['send_id'], ['sends.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_send_events_send_id', 'send_events', ['send_id'], unique=False)



def downgrade() -> None:
    op.drop_index('ix_send_events_send_id', table_name='send_events')
    op.drop_table('send_events')
    op.drop_index('ix_deliveries_send_state', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_batches_send_id', table_name='batches')
    op.drop_table('batches')
    op.drop_index('ix_sends_state_scheduled_at', table_name='sends')
    op.drop_table('sends')
    op.drop_index('ix_memberships_list_status_subscriber', table_name='memberships')
    op.drop_table('memberships')
    op.drop_table('lists')
    op.drop_table('issues')
    op.drop_table('suppressions')
    op.drop_table('subscribers')
    op.drop_table('publications')
