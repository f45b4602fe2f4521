"""Subscribers and lists: add, remove, search, unsubscribe (CSV files: csv_import.py, csv_export.py).

A subscriber is one address across the whole install (``Subscriber``); being
on a list is a ``Membership`` whose status is unconfirmed, confirmed or
unsubscribed. Addresses are stored in the form email-validator normalises them
to, and a person is found by the key of their address (``addresses.address_key``:
the whole address lower-cased, the domain IDNA-normalised), so
``Someone@example.org`` and ``someone@example.org`` are one subscriber.

Nothing here resubscribes someone who unsubscribed or whose address is
suppressed: only the person can undo that, through a signup.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

from email_validator import EmailNotValidError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import address_key, normalise_address
from newsletter.errors import InputError, NotFound, Problem
from newsletter.authoring.header_checks import header_field_problems
from newsletter.config import Settings
from newsletter.store.publications import get_publication, settings_for
from newsletter.transports import why_never_delivered
from newsletter.store.models import (
    MailingList,
    Membership,
    PublicationRow,
    Send,
    Subscriber,
    SubscriberMerge,
    utcnow,
)
from newsletter.audience.suppressions import is_suppressed

LIST_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
# What to do about an address a publication's transport can never deliver
# (``transports.why_never_delivered``), wherever one is refused.
NEVER_DELIVERED_FIX = ("correct the address, or send this publication's mail by SMTP through a server that offers "
                       "SMTPUTF8 (or by Mailgun)")
JOIN_STATUSES = ("confirmed", "unconfirmed")  # what an add or an import may set
SUBSCRIBER_STATUSES = ("active", "unsubscribed", "erased")
MEMBERSHIP_STATUSES = ("confirmed", "unconfirmed", "unsubscribed")
NAME_MAX = 200
# A name goes into the To header of every issue and of the confirmation email:
# refuse anything that could end a header line, raw or encoded. Raw: control
# characters (C0, DEL, C1 with NEL) and the Unicode line and paragraph
# separators. Encoded: a URL-encoded CR or LF, and any RFC 2047 encoded word,
# which a mail reader would decode (to a line break, perhaps).
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_LINE_BREAK = re.compile(r"%0[ad]|=\?[^?]*\?[bq]\?", re.IGNORECASE)
_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LINE FEED", "\x0b": "LINE TABULATION", "\x0c": "FORM FEED",
                  "\r": "CARRIAGE RETURN", "\x85": "NEXT LINE"}
# Rows per INSERT/UPDATE and per IN (...) lookup: well under SQLite's and
# PostgreSQL's limits on bound parameters, large enough to be fast.
CHUNK = 1000


# -- addresses ---------------------------------------------------------------


def checked_address(raw: str, where: str = "field email") -> str:
    try:
        return normalise_address(raw)
    except EmailNotValidError as exc:
        raise InputError(Problem(where, f"{raw!r} is not an email address: {exc}", "correct the address")) from None


def checked_name(raw: str, where: str = "field name") -> str:
    """A name as typed, spaces tidied, or InputError if it is too long or could break a header.

    The one check of names for every way in: sign-up, the CLI and CSV import.
    A TAB (a spreadsheet's cell separator, pasted into a cell) is a space.
    """
    raw = raw.replace("\t", " ")
    found = _LINE_BREAKING.search(raw)
    if found:
        character = found.group()
        label = unicodedata.name(character, "") or _CONTROL_NAMES.get(character, "control character")
        raise InputError(Problem(where, f"the name contains a line break or control character (U+{ord(character):04X} {label})",
                                 "type the name as plain text, on one line"))
    if _ENCODED_LINE_BREAK.search(raw):
        raise InputError(Problem(where, "the name contains an encoded line break (%0A, %0D) or encoded word (=?...?=)",
                                 "type the name as plain text, on one line"))
    name = " ".join(raw.split())  # runs of spaces are typing accidents
    if len(name) > NAME_MAX:
        raise InputError(Problem(where, f"the name is longer than {NAME_MAX} characters", "shorten it"))
    return name


# -- lists -------------------------------------------------------------------


@dataclass(frozen=True)
class ListSummary:
    id: int
    publication: str
    slug: str
    name: str
    description: str
    confirmed: int
    unconfirmed: int
    unsubscribed: int


def create_list(session: Session, publication_slug: str, slug: str, name: str, description: str = "") -> MailingList:
    publication = get_publication(session, publication_slug)
    if not LIST_SLUG.match(slug):
        raise InputError(
            Problem("list slug", f"{slug!r} cannot name a list", "use lower-case letters, digits and hyphens, e.g. monthly-news")
        )
    name = checked_list_name(name)
    taken = select(MailingList.id).where(MailingList.publication_id == publication.id, MailingList.slug == slug)
    if session.scalar(taken) is not None:
        raise InputError(Problem("list slug", f"{publication_slug} already has a list {slug!r}", "choose another slug"))
    row = MailingList(publication_id=publication.id, slug=slug, name=name, description=description.strip())
    session.add(row)
    session.flush()
    return row


def update_list(session: Session, row: MailingList, name: str, description: str) -> MailingList:
    """Rename and describe a list. Its slug stays: it is in sign-up links already out in the world."""
    row.name = checked_list_name(name)
    row.description = description.strip()
    session.flush()
    return row


def checked_list_name(name: str) -> str:
    if not name.strip():
        raise InputError(Problem("list name", "a list needs a name people will recognise",
                                 "give it one, e.g. Monthly news"))
    # The name goes into the List-Id header of every message sent to the list.
    if problems := header_field_problems("list name", name.strip()):
        raise InputError(Problem("list name", problems[0].message, "write the name on one line"))
    if len(name.strip()) > 200:
        raise InputError(Problem("list name", "a list's name can be at most 200 characters", "shorten it"))
    return name.strip()


def get_list(session: Session, publication_slug: str | None, slug: str) -> MailingList:
    """The list ``slug``; ``publication_slug`` may be None when only one publication has it."""
    query = select(MailingList).join(PublicationRow).where(MailingList.slug == slug)
    if publication_slug is not None:
        get_publication(session, publication_slug)
        query = query.where(PublicationRow.slug == publication_slug)
    found = session.scalars(query).all()
    if not found:
        owner = f" in {publication_slug}" if publication_slug else ""
        raise NotFound(f"no list {slug!r}{owner}; `newsletter lists list` shows the lists there are")
    if len(found) > 1:
        raise InputError(
            Problem("list", f"several publications have a list {slug!r}", "say which with --publication")
        )
    return found[0]


def list_lists(session: Session, publication_slug: str | None = None) -> list[ListSummary]:
    """Every list (of one publication, if given) with its members counted by status."""
    query = (
        select(MailingList.id, PublicationRow.slug, MailingList.slug, MailingList.name, MailingList.description)
        .join(PublicationRow)
        .order_by(PublicationRow.slug, MailingList.slug)
    )
    if publication_slug is not None:
        query = query.where(PublicationRow.slug == get_publication(session, publication_slug).slug)
    counts: dict[tuple[int, str], int] = {
        (list_id, status): n
        for list_id, status, n in session.execute(
            select(Membership.list_id, Membership.status, func.count()).group_by(Membership.list_id, Membership.status)
        )
    }
    return [
        ListSummary(
            id=list_id, publication=pub, slug=slug, name=name, description=description,
            confirmed=counts.get((list_id, "confirmed"), 0),
            unconfirmed=counts.get((list_id, "unconfirmed"), 0),
            unsubscribed=counts.get((list_id, "unsubscribed"), 0),
        )
        for list_id, pub, slug, name, description in session.execute(query)
    ]


def remove_list(session: Session, publication_slug: str | None, slug: str) -> None:
    """Delete a list and its memberships; refused while any send refers to it."""
    mailing_list = get_list(session, publication_slug, slug)
    sends = session.execute(select(Send.id, Send.state).where(Send.list_id == mailing_list.id)).all()
    if sends:
        named = ", ".join(f"send {send_id} ({state})" for send_id, state in sends)
        raise InputError(
            Problem(
                "list", f"list {slug!r} is used by {named}",
                "a list that has been sent to is kept as the record of who received what",
            )
        )
    session.execute(delete(Membership).where(Membership.list_id == mailing_list.id))
    session.delete(mailing_list)
    session.flush()


def resolve_list(session: Session, publication_slug: str | None, list_or_slug) -> MailingList:
    if isinstance(list_or_slug, MailingList):
        return list_or_slug
    return get_list(session, publication_slug, list_or_slug)


# -- subscribers -------------------------------------------------------------


def find_subscriber(session: Session, address: str) -> Subscriber | None:
    """The subscriber an address belongs to, in whatever case or form it is given."""
    return session.scalars(select(Subscriber).where(Subscriber.email_key == address_key(address))).first()


def subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, following a merge (links in emails sent
    before two spellings were merged carry the merged id)."""
    found = session.get(Subscriber, subscriber_id)
    if found is None:
        kept = session.scalar(select(SubscriberMerge.kept_id).where(SubscriberMerge.merged_id == subscriber_id))
        found = session.get(Subscriber, kept) if kept is not None else None
    return found


def get_subscriber(session: Session, email: str) -> Subscriber:
    address = checked_address(email)
    row = find_subscriber(session, address)
    if row is None:
        raise NotFound(f"no subscriber {address}; `newsletter subscribers search` finds people by part of an address or name")
    return row


def add_subscriber(
    session: Session,
    email: str,
    name: str = "",
    lists: Iterable = (),
    attributes: dict | None = None,
    status: str = "confirmed",
    *,
    publication_slug: str | None = None,
    source: str = "cli",
    settings: Settings | None = None,
) -> Subscriber:
    """Add a person (or update their name and attributes) and put them on ``lists``.

    ``lists`` holds list slugs or MailingList rows; ``status`` is the status of
    the new memberships: confirmed or unconfirmed (awaiting a confirm link).
    With ``settings``, an address that a list's publication can never send to
    (``transports.why_never_delivered``) is refused, as an import refuses it.
    """
    if status not in JOIN_STATUSES:
        raise InputError(Problem("field status", f"{status!r} is not a status to join with", "use confirmed or unconfirmed"))
    address = checked_address(email)
    name = checked_name(name)
    targets = [resolve_list(session, publication_slug, item) for item in lists]
    if settings is not None:
        for target in targets:
            publication = session.get(PublicationRow, target.publication_id)
            if never := why_never_delivered(settings_for(settings, publication).transport, address):
                raise InputError(Problem("field email", never, NEVER_DELIVERED_FIX))
    _refuse_resubscribe(session, address)
    subscriber = find_subscriber(session, address)
    if subscriber is None:
        subscriber = Subscriber(email=address, email_key=address_key(address), name=name,
                                attributes=dict(attributes or {}), source=source)
        session.add(subscriber)
        session.flush()
    else:
        subscriber.name = name or subscriber.name
        subscriber.attributes = {**subscriber.attributes, **(attributes or {})}
    for mailing_list in targets:
        _join(session, subscriber, mailing_list, status)
    session.flush()
    return subscriber


def _refuse_resubscribe(session: Session, address: str) -> None:
    if is_suppressed(session, address):
        raise InputError(
            Problem("field email", f"{address} is on the suppression list (it bounced, complained or was removed)",
                    "mail to it stops for good; it cannot be added again")
        )
    status = session.scalar(select(Subscriber.status).where(Subscriber.email_key == address_key(address)))
    if status not in (None, "active"):
        raise InputError(
            Problem("field email", f"{address} has {status}", "only the person can subscribe again, through the signup page")
        )


def _join(session: Session, subscriber: Subscriber, mailing_list: MailingList, status: str) -> None:
    membership = session.scalars(
        select(Membership).where(Membership.list_id == mailing_list.id, Membership.subscriber_id == subscriber.id)
    ).first()
    if membership is None:
        session.add(Membership(list_id=mailing_list.id, subscriber_id=subscriber.id, status=status))
    elif membership.status == "unsubscribed":
        raise InputError(
            Problem("field email", f"{subscriber.email} left the list {mailing_list.slug!r}",
                    "only the person can join it again, through the signup page")
        )
    elif membership.status == "unconfirmed" and status == "confirmed":
        membership.status = "confirmed"


def remove_subscriber(session: Session, email: str, list=None, *, publication_slug: str | None = None) -> None:
    """Take a person off one list, or (no list) delete them and their memberships.

    This forgets them: a later import may add them again. To stop mail to
    someone for good, use ``unsubscribe`` or the suppression list instead.
    """
    subscriber = get_subscriber(session, email)
    if list is None:
        session.execute(delete(Membership).where(Membership.subscriber_id == subscriber.id))
        session.delete(subscriber)
        session.flush()
        return
    mailing_list = resolve_list(session, publication_slug, list)
    removed = session.execute(
        delete(Membership).where(Membership.subscriber_id == subscriber.id, Membership.list_id == mailing_list.id)
    )
    if removed.rowcount == 0:
        raise NotFound(f"{subscriber.email} is not on the list {mailing_list.slug!r}")


def unsubscribe(session: Session, email: str, list=None, *, publication_slug: str | None = None) -> Subscriber:
    """Record that a person left one list, or (no list) everything. Safe to repeat."""
    subscriber = get_subscriber(session, email)
    now = utcnow()
    leaving = update(Membership).where(Membership.subscriber_id == subscriber.id)
    if list is None:
        subscriber.status = "unsubscribed" if subscriber.status == "active" else subscriber.status
    else:
        leaving = leaving.where(Membership.list_id == resolve_list(session, publication_slug, list).id)
    session.execute(leaving.values(status="unsubscribed", updated_at=now))
    session.flush()
    return subscriber


def find_subscribers(
    session: Session,
    query: str | None = None,
    list=None,
    status: str | None = None,
    limit: int = 50,
    after_id: int | None = None,
    *,
    publication_slug: str | None = None,
) -> list[Subscriber]:
    """One page of subscribers in id order; pass the last id as ``after_id`` for the next.

    ``query`` matches part of the address or name, in any case. With ``list``,
    ``status`` is the membership status (confirmed, unconfirmed, unsubscribed);
    without, it is the subscriber's (active, unsubscribed, erased).
    """
    statement = select(Subscriber).order_by(Subscriber.id).limit(limit)
    if after_id is not None:
        statement = statement.where(Subscriber.id > after_id)
    if query:
        statement = statement.where(
            Subscriber.email.icontains(query, autoescape=True) | Subscriber.name.icontains(query, autoescape=True)
        )
    if list is not None:
        mailing_list = resolve_list(session, publication_slug, list)
        statement = statement.join(Membership).where(Membership.list_id == mailing_list.id)
        if status is not None:
            check_status(status, MEMBERSHIP_STATUSES)
            statement = statement.where(Membership.status == status)
    elif status is not None:
        check_status(status, SUBSCRIBER_STATUSES)
        statement = statement.where(Subscriber.status == status)
    return [*session.scalars(statement)]


def check_status(status: str, allowed: tuple[str, ...]) -> None:
    if status not in allowed:
        raise InputError(Problem("field status", f"{status!r} is not a status here", "use one of " + ", ".join(allowed)))


def memberships_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """For display: each subscriber's (list slug, membership status) pairs."""
    found: dict[int, list[tuple[str, str]]] = {}
    for ids in chunks([*subscriber_ids], CHUNK):
        rows = session.execute(
            select(Membership.subscriber_id, MailingList.slug, Membership.status)
            .join(MailingList)
            .where(Membership.subscriber_id.in_(ids))
            .order_by(MailingList.slug)
        )
        for subscriber_id, slug, status in rows:
            found.setdefault(subscriber_id, []).append((slug, status))
    return found


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
