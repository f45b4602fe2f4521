"""The suppression list: addresses never mailed again, whatever their lists say.

One rule decides whether an address is suppressed: its key
(``addresses.address_key``, the same key that identifies a subscriber): the
address lower-cased whole, its domain IDNA-normalised. This is a safety list:
a complaint from ``Someone@example.org`` must also stop mail to
``someone@example.org``.

An address erased on request is kept only as ``sha256:`` + the SHA-256 of its
key. Erasures made before the key was lower-cased hashed the normalised
address as it was; the address is gone, so those entries cannot be re-keyed,
and ``lookup_keys`` checks that older hash too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from newsletter.addresses import HASH_PREFIX, address_key
from newsletter.store.lookups import among
from newsletter.store.models import Suppression, utcnow
from newsletter.store.upsert import insert_ignore

# Keys per IN (...) lookup: well under both databases' limits on bound parameters.
CHUNK = 900


# The list's key for an address: the one identity rule, shared with subscribers.
suppression_key = address_key


def hashed_address(address: str) -> str:
    """The entry an erasure leaves for a normalised address."""
    return _sha256(suppression_key(address))


def lookup_keys(address: str) -> tuple[str, ...]:
    """Every entry that suppresses ``address``: its key, the hash of its key, and
    the hash older erasures wrote (of the address not lower-cased)."""
    key = suppression_key(address)
    return tuple(dict.fromkeys((key, _sha256(key), _sha256(address))))


def erased_keys(address: str) -> tuple[str, ...]:
    """The entries an erasure of ``address`` may have left (new and older form)."""
    return tuple(dict.fromkeys((hashed_address(address), _sha256(address))))


def is_suppressed(session: Session, address: str) -> bool:
    """True for a suppressed address, also one erased on request (kept only as a hash)."""
    return bool(session.scalar(select(exists().where(Suppression.email.in_(lookup_keys(address))))))


def suppressed_addresses(session: Session, addresses: Iterable[str]) -> set[str]:
    """Those of ``addresses`` that are suppressed, as given."""
    owners: dict[str, list[str]] = {}
    for address in set(addresses):
        for key in lookup_keys(address):
            owners.setdefault(key, []).append(address)
    keys, found = list(owners), set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        column = Suppression.__table__.c.email  # plain rows through the connection: no ORM loading
        for key in session.connection().scalars(select(column).where(among(session, column, chunk))):
            found.update(owners[key])
    return found


def suppressed_in_sql(address_column) -> ColumnElement[bool]:
    """SQL: the address in ``address_column`` is on the list by its key.

    Compared as ``email = lower(column)`` so the list's unique index serves the
    lookup. Hashed (erased) entries cannot be matched in SQL, and SQLite's
    lower() folds ASCII letters only; the claim-time check
    (``suppressed_addresses``, in Python) catches both before anything is sent.
    """
    return exists().where(Suppression.email == func.lower(address_column))


def suppressed_key_in_sql(key_column) -> ColumnElement[bool]:
    """SQL: the entry for a column that holds keys already (``Subscriber.email_key``)."""
    return exists().where(Suppression.email == key_column)


def find_suppression(session: Session, address: str) -> Suppression | None:
    """The plain (not erased) entry for an address, if any."""
    return session.scalars(select(Suppression).where(Suppression.email == suppression_key(address))).first()


def add_suppression(session: Session, email: str, reason: str, source: str) -> None:
    """Never send to this address again. An existing entry is kept as it is."""
    row = {"email": suppression_key(email), "reason": reason, "source": source, "created_at": utcnow()}
    session.execute(insert_ignore(session, Suppression, [row], ["email"]))


def _sha256(text: str) -> str:
    return HASH_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()
