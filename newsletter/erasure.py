"""Erasing a subscriber's personal data on request.

What goes: the subscriber (name, attributes), their memberships, their
address in the send ledger and in provider events (and those events' raw
payloads and details, which quote it). What stays: one suppression entry
holding a SHA-256 of the normalised address, so the address is never mailed
again and an import or sign-up with it is refused, without keeping the
address itself. The ledger rows stay too, anonymised, so a send's counts
still add up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from email_validator import EmailNotValidError
from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from newsletter.store.models import Delivery, Membership, ProviderEvent, Subscriber, Suppression, utcnow

HASH_PREFIX = "sha256:"
# What an erased recipient's ledger rows say instead of the address.
ERASED_ADDRESS = "erased@erased.invalid"


def hashed_address(address: str) -> str:
    """The suppression entry of an erased (normalised) address."""
    return HASH_PREFIX + hashlib.sha256(address.encode("utf-8")).hexdigest()


def suppression_keys(address: str) -> tuple[str, str]:
    """Both forms a normalised address can take on the suppression list."""
    return address, hashed_address(address)


def is_erased(session: Session, address: str) -> bool:
    return bool(session.scalar(select(exists().where(Suppression.email == hashed_address(address)))))


@dataclass(frozen=True)
class ErasureReport:
    subscriber_deleted: bool
    memberships_deleted: int
    ledger_rows_anonymised: int
    events_anonymised: int


def erase_subscriber(session: Session, email: str) -> ErasureReport:
    """Erase everything we hold on ``email`` but a hashed suppression entry.

    Safe to repeat; works for an address that bounced but was never a subscriber.
    """
    address = _address(email)
    hashed = hashed_address(address)
    subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email == address))
    memberships = 0
    if subscriber_id is not None:
        memberships = session.execute(delete(Membership).where(Membership.subscriber_id == subscriber_id)).rowcount
        # Ledger rows keep their place (SET NULL); other rows keyed on the person go with them.
        session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    now = utcnow()
    ledger = session.execute(
        update(Delivery).where(Delivery.email == address).values(email=ERASED_ADDRESS, updated_at=now)
    ).rowcount
    events = session.execute(
        update(ProviderEvent).where(ProviderEvent.email == address).values(email=hashed, raw=None, detail="")
    ).rowcount
    _replace_suppression(session, address, hashed)
    session.flush()
    return ErasureReport(subscriber_id is not None, memberships, ledger, events)


def _replace_suppression(session: Session, address: str, hashed: str) -> None:
    from newsletter.suppressions import add_suppression

    previous = session.scalar(select(Suppression.reason).where(Suppression.email == address))
    session.execute(delete(Suppression).where(Suppression.email == address))
    source = "erased on request" + (f" (was suppressed: {previous})" if previous else "")
    add_suppression(session, hashed, "erased", source)


def _address(email: str) -> str:
    from newsletter.subscribers import normalise_address

    try:
        return normalise_address(email)
    except EmailNotValidError:
        # An address we cannot validate may still be in the ledger as typed.
        return email.strip().lower()
