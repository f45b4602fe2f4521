"""One subscriber per person (email_key), segments, and sends to several lists

Revision ID: 0008
Revises: 0007

Subscribers are now found by ``email_key`` (newsletter/addresses.py,
``address_key``: the address lower-cased whole, its domain IDNA-normalised).
Before, ``Someone@example.org`` and ``someone@example.org`` were two
subscribers and both were mailed. This migration merges such duplicates into
the one that joined first:

- the earliest join (created_at) and that row's address as typed;
- the union of lists and custom fields, the newest value winning (by when
  each subscriber row was last updated);
- the strongest status: erased, then unsubscribed, over active; on a list,
  unsubscribed over confirmed over unconfirmed;
- no history lost: ledger rows and confirmation emails are re-pointed to the
  kept subscriber (a ledger row of a send both spellings were in keeps its
  address and state, without a subscriber); the merged ids are recorded in
  ``subscriber_merges`` so links in emails already sent still work.

It prints each merge. Suppression entries were keyed by the lower-cased
address already (0007); the key is the same for them. On PostgreSQL,
``subscribers.attributes`` becomes JSONB (segments read custom fields from it);
this rewrites the table, some 30 seconds for a million subscribers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from newsletter.addresses import address_key

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)
PAGE = 5000

subscribers = sa.table(
    "subscribers",
    sa.column("id", ID), sa.column("email", sa.String), sa.column("email_key", sa.String),
    sa.column("name", sa.String), sa.column("status", sa.String), sa.column("attributes", sa.JSON),
    sa.column("source", sa.String), sa.column("created_at", UTC_DATETIME), sa.column("updated_at", UTC_DATETIME),
)
memberships = sa.table(
    "memberships",
    sa.column("id", ID), sa.column("list_id", ID), sa.column("subscriber_id", ID), sa.column("status", sa.String),
    sa.column("created_at", UTC_DATETIME), sa.column("updated_at", UTC_DATETIME),
)
deliveries = sa.table("deliveries", sa.column("id", ID), sa.column("send_id", ID), sa.column("subscriber_id", ID))
confirmations = sa.table(
    "confirmation_emails",
    sa.column("id", ID), sa.column("subscriber_id", ID), sa.column("last_sent_at", UTC_DATETIME),
    sa.column("emails_sent", sa.Integer),
)
merges = sa.table(
    "subscriber_merges", sa.column("merged_id", ID), sa.column("kept_id", ID), sa.column("merged_at", UTC_DATETIME),
)

SUBSCRIBER_STRENGTH = {"active": 0, "unsubscribed": 1, "erased": 2}
MEMBERSHIP_STRENGTH = {"unconfirmed": 0, "confirmed": 1, "unsubscribed": 2}


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("email_key", sa.String(length=320), nullable=False, server_default=""))
    op.create_table(
        "subscriber_merges",
        sa.Column("id", ID, nullable=False),
        sa.Column("merged_id", ID, nullable=False),
        sa.Column("kept_id", ID, nullable=False),
        sa.Column("merged_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["kept_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merged_id"),
    )
    op.create_index("ix_subscriber_merges_kept_id", "subscriber_merges", ["kept_id"])
    connection = op.get_bind()
    _fill_keys(connection)
    for key in _duplicate_keys(connection):
        _merge(connection, key)
    op.create_index("ix_subscribers_email_key", "subscribers", ["email_key"], unique=True)
    if connection.dialect.name == "postgresql":
        # Segments read custom fields row by row; JSONB needs no parsing for it.
        op.execute("ALTER TABLE subscribers ALTER COLUMN attributes TYPE jsonb USING attributes::jsonb")
    _segments_and_send_lists()


def _segments_and_send_lists() -> None:
    op.create_table(
        "segments",
        sa.Column("id", ID, nullable=False),
        sa.Column("publication_id", ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("publication_id", "name"),
    )
    op.create_table(
        "send_lists",
        sa.Column("id", ID, nullable=False),
        sa.Column("send_id", ID, nullable=False),
        sa.Column("list_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"]),
        sa.ForeignKeyConstraint(["list_id"], ["lists.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("send_id", "list_id"),
    )
    op.add_column("sends", sa.Column("segment_name", sa.String(length=100), nullable=False, server_default=""))
    op.add_column("sends", sa.Column("segment_condition", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE subscribers ALTER COLUMN attributes TYPE json USING attributes::json")
    op.drop_column("sends", "segment_condition")
    op.drop_column("sends", "segment_name")
    op.drop_table("send_lists")
    op.drop_table("segments")
    op.drop_index("ix_subscribers_email_key", table_name="subscribers")
    op.drop_table("subscriber_merges")
    op.drop_column("subscribers", "email_key")


def _fill_keys(connection) -> None:
    """lower() in SQL for every row at once, then Python's key where it differs
    (non-ASCII letters, IDNA domains): SQLite's lower() folds ASCII only."""
    connection.execute(sa.update(subscribers).values(email_key=sa.func.lower(subscribers.c.email)))
    after = 0
    while True:
        page = connection.execute(
            sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.email_key)
            .where(subscribers.c.id > after).order_by(subscribers.c.id).limit(PAGE)
        ).all()
        if not page:
            return
        fixes = [{"row_id": row.id, "key": address_key(row.email)} for row in page if address_key(row.email) != row.email_key]
        if fixes:
            connection.execute(
                sa.update(subscribers).where(subscribers.c.id == sa.bindparam("row_id")).values(email_key=sa.bindparam("key")),
                fixes,
            )
        after = page[-1].id


def _duplicate_keys(connection) -> list[str]:
    return connection.execute(
        sa.select(subscribers.c.email_key).group_by(subscribers.c.email_key).having(sa.func.count() > 1)
        .order_by(subscribers.c.email_key)
    ).scalars().all()


def _merge(connection, key: str) -> None:
    rows = connection.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).all()
    kept = min(rows, key=lambda row: (row.created_at, row.id))
    others = [row for row in rows if row.id != kept.id]
    other_ids = [row.id for row in others]
    newest_first = sorted(rows, key=lambda row: (row.updated_at, row.id), reverse=True)
    attributes: dict = {}
    for row in reversed(newest_first):  # oldest first, so the newest value is written last
        attributes.update(row.attributes or {})
    connection.execute(
        sa.update(subscribers).where(subscribers.c.id == kept.id).values(
            name=next((row.name for row in newest_first if row.name), ""),
            status=max((row.status for row in rows), key=lambda status: SUBSCRIBER_STRENGTH.get(status, 0)),
            attributes=attributes,
            updated_at=max(row.updated_at for row in rows),
        )
    )
    lists = _merge_memberships(connection, kept.id, other_ids)
    ledger = _repoint_ledger(connection, kept.id, other_ids)
    _merge_confirmations(connection, kept.id, other_ids)
    now = datetime.now(timezone.utc)
    connection.execute(sa.update(merges).where(merges.c.kept_id.in_(other_ids)).values(kept_id=kept.id))
    connection.execute(sa.insert(merges), [{"merged_id": i, "kept_id": kept.id, "merged_at": now} for i in other_ids])
    connection.execute(sa.delete(subscribers).where(subscribers.c.id.in_(other_ids)))
    spellings = ", ".join(f"{row.email} (id {row.id})" for row in others)
    print(f"merged subscriber {spellings} into {kept.email} (id {kept.id}): "
          f"{lists} list(s), {ledger} ledger row(s) re-pointed")


def _merge_memberships(connection, kept_id: int, other_ids: list[int]) -> int:
    """One membership per list for the kept subscriber, with the strongest status."""
    ids = [kept_id, *other_ids]
    by_list = defaultdict(list)
    for row in connection.execute(sa.select(memberships).where(memberships.c.subscriber_id.in_(ids))):
        by_list[row.list_id].append(row)
    for rows in by_list.values():
        keep = min(rows, key=lambda row: (row.subscriber_id != kept_id, row.created_at, row.id))
        strongest = max(rows, key=lambda row: MEMBERSHIP_STRENGTH.get(row.status, 0))
        connection.execute(sa.delete(memberships).where(memberships.c.id.in_([r.id for r in rows if r.id != keep.id])))
        connection.execute(
            sa.update(memberships).where(memberships.c.id == keep.id).values(
                subscriber_id=kept_id, status=strongest.status,
                created_at=min(row.created_at for row in rows), updated_at=max(row.updated_at for row in rows),
            )
        )
    return len(by_list)


def _repoint_ledger(connection, kept_id: int, other_ids: list[int]) -> int:
    """Ledger rows follow the person; a send that had both spellings keeps
    both rows (one per address it went to), the second without a subscriber."""
    taken = set(connection.execute(sa.select(deliveries.c.send_id).where(deliveries.c.subscriber_id == kept_id)).scalars())
    moved = 0
    for row in connection.execute(
        sa.select(deliveries.c.id, deliveries.c.send_id).where(deliveries.c.subscriber_id.in_(other_ids)).order_by(deliveries.c.id)
    ).all():
        both = row.send_id in taken
        connection.execute(
            sa.update(deliveries).where(deliveries.c.id == row.id).values(subscriber_id=None if both else kept_id)
        )
        taken.add(row.send_id)
        moved += 1
    return moved


def _merge_confirmations(connection, kept_id: int, other_ids: list[int]) -> None:
    rows = connection.execute(
        sa.select(confirmations).where(confirmations.c.subscriber_id.in_([kept_id, *other_ids]))
    ).all()
    if not rows:
        return
    latest = max(rows, key=lambda row: row.last_sent_at)
    connection.execute(sa.delete(confirmations).where(confirmations.c.id.in_([r.id for r in rows if r.id != latest.id])))
    connection.execute(
        sa.update(confirmations).where(confirmations.c.id == latest.id)
        .values(subscriber_id=kept_id, emails_sent=sum(row.emails_sent for row in rows))
    )
