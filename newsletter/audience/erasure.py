"""Erasing a subscriber's personal data on request.

What goes: the subscriber (name, attributes), their memberships, their
address in the send ledger and in provider events (and those events' raw
payloads and details, which quote it), and the address wherever the audit log
quotes it (a suppression added or removed by hand). What stays: one suppression entry
holding a SHA-256 of the address's key (see addresses.py), so
the address, in any case, is never mailed again and an
import or sign-up with it is refused, without keeping the address itself. The ledger rows stay too, anonymised, so a send's counts
still add up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError
from sqlalchemy import String, and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import address_key
from newsletter.store.models import AuditEntry, ClickHistory, Delivery, Membership, ProviderEvent, Subscriber, Suppression, utcnow
from newsletter.audience.suppressions import add_suppression, erased_keys, find_suppression, hashed_address

# What an erased recipient's ledger rows say instead of the address.
ERASED_ADDRESS = "erased@erased.invalid"
# What the audit log says instead of it.
ERASED_IN_AUDIT = "(an erased address)"


def is_erased(session: Session, address: str) -> bool:
    return bool(session.scalar(select(exists().where(Suppression.email.in_(erased_keys(address))))))


@dataclass(frozen=True)
class ErasureReport:
    subscriber_deleted: bool
    memberships_deleted: int
    ledger_rows_anonymised: int
    events_anonymised: int
    audit_entries_anonymised: int = 0


def erase_subscriber(session: Session, email: str) -> ErasureReport:
    """Erase everything we hold on ``email`` but a hashed suppression entry.

    Safe to repeat; works for an address that bounced but was never a subscriber.
    """
    address = _address(email)
    hashed = hashed_address(address)
    subscriber = session.execute(
        select(Subscriber.id, Subscriber.email).where(Subscriber.email_key == address_key(address))
    ).first()
    spellings = _spellings(session, address, subscriber)
    memberships = 0
    if subscriber is not None:
        memberships = session.execute(delete(Membership).where(Membership.subscriber_id == subscriber.id)).rowcount
        # Ledger rows keep their place (SET NULL); other rows keyed on the person go with them.
        session.execute(delete(ClickHistory).where(ClickHistory.subscriber_id == subscriber.id))  # per_person clicks
        session.execute(delete(Subscriber).where(Subscriber.id == subscriber.id))
    now = utcnow()
    ledger = session.execute(
        # The subscriber is deleted by now: all their rows have lost it, and are found as orphans.
        update(Delivery).where(_in_ledger(None, spellings)).values(email=ERASED_ADDRESS, updated_at=now)
    ).rowcount
    events = session.execute(
        update(ProviderEvent).where(ProviderEvent.email.in_(spellings)).values(email=hashed, raw=None, detail="")
    ).rowcount
    audit_entries = 0
    for entry in _audit_mentions(session, spellings):
        entry.detail = _quoting(spellings).sub(ERASED_IN_AUDIT, entry.detail)
        audit_entries += 1
    _replace_suppression(session, address, hashed)
    session.flush()
    return ErasureReport(subscriber is not None, memberships, ledger, events, audit_entries)


def what_erasure_removes(session: Session, email: str) -> ErasureReport:
    """What ``erase_subscriber`` would do now, counted, changing nothing."""
    address = _address(email)
    subscriber = session.execute(
        select(Subscriber.id, Subscriber.email).where(Subscriber.email_key == address_key(address))
    ).first()
    spellings = _spellings(session, address, subscriber)
    memberships = session.scalar(select(func.count()).where(Membership.subscriber_id == subscriber.id)) \
        if subscriber is not None else 0
    ledger = session.scalar(select(func.count()).where(_in_ledger(subscriber, spellings)))
    events = session.scalar(select(func.count()).where(ProviderEvent.email.in_(spellings)))
    mentions = len(_audit_mentions(session, spellings))
    return ErasureReport(subscriber is not None, memberships, ledger, events, mentions)


def _quoting(spellings: list[str]) -> re.Pattern:
    """The address as a whole word: erasing a@example.org leaves ba@example.org alone."""
    alternatives = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    return re.compile(rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-])(?:{alternatives})(?![\w-]|\.\w)", re.IGNORECASE)


def _audit_mentions(session: Session, spellings: list[str]) -> list[AuditEntry]:
    """Audit entries that quote the address (found by SQL, confirmed word by word)."""
    found: dict[int, AuditEntry] = {}
    for spelling in spellings:
        for entry in session.scalars(select(AuditEntry).where(AuditEntry.detail.icontains(spelling, autoescape=True))):
            found[entry.id] = entry
    pattern = _quoting(spellings)
    return [entry for entry in found.values() if pattern.search(entry.detail)]


def _in_ledger(subscriber, spellings: list[str]):
    """The person's ledger rows: the subscriber's, and those whose subscriber is
    gone (deleted: their rows' subscriber_id is NULL) by the address, through
    the partial index on lower(email). Both sides are lowered by the database
    (SQLite folds only A-Z), so a row stored as one of the spellings is always
    found; every spelling is one address key, so no other address matches."""
    orphans = and_(Delivery.subscriber_id.is_(None),
                   func.lower(Delivery.email).in_([func.lower(literal(s, String)) for s in spellings]))
    return orphans if subscriber is None else or_(Delivery.subscriber_id == subscriber.id, orphans)


def _spellings(session: Session, address: str, subscriber) -> list[str]:
    """Every form of the address the ledger and events may hold: as given, as
    the subscriber has it, and as it was frozen into their ledger rows (the
    same person may have been sent to under another case before)."""
    found = {address, address_key(address)}
    if subscriber is not None:
        found.add(subscriber.email)
        found.update(session.scalars(
            select(Delivery.email).where(Delivery.subscriber_id == subscriber.id).distinct()
        ))
    found.update(session.scalars(  # rows whose subscriber is gone (partial index ix_deliveries_orphan_email)
        select(Delivery.email).where(Delivery.subscriber_id.is_(None),
                                     func.lower(Delivery.email) == address_key(address)).distinct()
    ))
    return sorted(email for email in found if address_key(email) == address_key(address))


def _replace_suppression(session: Session, address: str, hashed: str) -> None:
    # The plain entry, by its (lower-cased) key, gives way to the hash of that key.
    previous = find_suppression(session, address)
    if previous is not None:
        session.delete(previous)
        session.flush()
    source = "erased on request" + (f" (was suppressed: {previous.reason})" if previous else "")
    add_suppression(session, hashed, "erased", source)


def _address(email: str) -> str:
    from newsletter.audience.subscribers import normalise_address

    try:
        return normalise_address(email)
    except EmailNotValidError:
        # An address we cannot validate may still be in the ledger as typed.
        return email.strip().lower()
