"""Suppression entries keyed by the lower-cased address

Revision ID: 0007
Revises: 0006

The suppression list now matches an address whatever the case of its local
part (newsletter/audience/suppressions.py, ``suppression_key``). Entries written before
kept the address as email-validator normalised it, so ``Someone@example.org``
and ``someone@example.org`` may both be there: they become one entry, keyed
by the lower-cased address, keeping the earliest entry's date and the
strongest reason (a complaint, then a hard bounce, over softer ones).

Entries left by an erasure (``sha256:...``) hashed the address as it was
normalised, not lower-cased. The address is gone, so they cannot be re-keyed;
they stay as they are, and the lookup also checks that older hash.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models (see 0001).
suppressions = sa.table(
    "suppressions",
    sa.column("id", sa.BigInteger()),
    sa.column("email", sa.String(320)),
    sa.column("reason", sa.String(40)),
    sa.column("source", sa.String(200)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
HASH_PREFIX = "sha256:"
# Which reason a merged entry keeps: the one that says most about the address.
REASON_STRENGTH = {"complaint": 3, "hard_bounce": 2}
CHUNK = 900


def upgrade() -> None:
    connection = op.get_bind()
    for rows in _colliding_groups(connection):
        _merge(connection, rows)


def downgrade() -> None:
    # The original case of a local part is not kept; the lower-cased entries
    # suppress the same addresses under the old exact match too.
    pass


def _colliding_groups(connection) -> list[list]:
    """Rows that need re-keying, grouped by their new key (with any row that
    already holds that key). Keys are lower-cased in Python, as the app does:
    SQLite's lower() folds ASCII letters only."""
    plain = connection.execute(
        sa.select(suppressions.c.id, suppressions.c.email).where(~suppressions.c.email.startswith(HASH_PREFIX))
    )
    mixed_ids = [row.id for row in plain if row.email != row.email.lower()]
    groups = defaultdict(dict)
    for row in _rows_with_ids(connection, mixed_ids):
        groups[row.email.lower()][row.id] = row
    for row in _rows_with_emails(connection, list(groups)):
        groups[row.email][row.id] = row
    return [list(rows.values()) for rows in groups.values()]


def _rows_with_ids(connection, ids: list[int]):
    for start in range(0, len(ids), CHUNK):
        yield from connection.execute(sa.select(suppressions).where(suppressions.c.id.in_(ids[start:start + CHUNK])))


def _rows_with_emails(connection, emails: list[str]):
    for start in range(0, len(emails), CHUNK):
        yield from connection.execute(
            sa.select(suppressions).where(suppressions.c.email.in_(emails[start:start + CHUNK]))
        )


def _merge(connection, rows: list) -> None:
    """Keep the earliest row under the lower-cased key, with the strongest reason."""
    earliest = min(rows, key=lambda row: (row.created_at, row.id))
    strongest = min(rows, key=lambda row: (-REASON_STRENGTH.get(row.reason, 0), row.created_at, row.id))
    others = [row.id for row in rows if row.id != earliest.id]
    if others:
        connection.execute(sa.delete(suppressions).where(suppressions.c.id.in_(others)))
    connection.execute(
        sa.update(suppressions)
        .where(suppressions.c.id == earliest.id)
        .values(email=earliest.email.lower(), reason=strongest.reason, source=strongest.source)
    )
