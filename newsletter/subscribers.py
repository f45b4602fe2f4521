"""Subscribers and lists: add, remove, search, unsubscribe, CSV import and export.

A subscriber is one address across the whole install (``Subscriber``); being
on a list is a ``Membership`` whose status is unconfirmed, confirmed or
unsubscribed. Addresses are stored in the form email-validator normalises them
to (domain lower-cased), so the same person is found however they typed it.

Nothing here resubscribes someone who unsubscribed or whose address is
suppressed: only the person can undo that, through a signup.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from newsletter.erasure import suppression_keys
from newsletter.errors import InputError, NotFound, Problem
from newsletter.publications import get_publication
from newsletter.store.upsert import insert_ignoring
from newsletter.store.models import (
    MailingList,
    Membership,
    PublicationRow,
    Send,
    Subscriber,
    Suppression,
    utcnow,
)

LIST_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
JOIN_STATUSES = ("confirmed", "unconfirmed")  # what an add or an import may set
SUBSCRIBER_STATUSES = ("active", "unsubscribed", "erased")
MEMBERSHIP_STATUSES = ("confirmed", "unconfirmed", "unsubscribed")
NAME_MAX = 200
# Rows per INSERT/UPDATE and per IN (...) lookup: well under SQLite's and
# PostgreSQL's limits on bound parameters, large enough to be fast.
CHUNK = 1000
CSV_COLUMNS = ("email", "name", "lists")


# -- addresses ---------------------------------------------------------------


def normalise_address(raw: str) -> str:
    """The stored form of an address; raises EmailNotValidError with a reason."""
    return validate_email(raw.strip(), check_deliverability=False).normalized


def checked_address(raw: str, where: str = "field email") -> str:
    try:
        return normalise_address(raw)
    except EmailNotValidError as exc:
        raise InputError(Problem(where, f"{raw!r} is not an email address: {exc}", "correct the address")) from None


def is_suppressed(session: Session, email: str) -> bool:
    """True for a suppressed address, also one erased on request (kept only as a hash)."""
    return session.scalar(select(exists().where(Suppression.email.in_(suppression_keys(email)))))


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
    if not name.strip():
        raise InputError(Problem("list name", "a list needs a name people will recognise", "give --name"))
    taken = select(MailingList.id).where(MailingList.publication_id == publication.id, MailingList.slug == slug)
    if session.scalar(taken) is not None:
        raise InputError(Problem("list slug", f"{publication_slug} already has a list {slug!r}", "choose another slug"))
    row = MailingList(publication_id=publication.id, slug=slug, name=name.strip(), description=description.strip())
    session.add(row)
    session.flush()
    return row


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


def _resolve_list(session: Session, publication_slug: str | None, list_or_slug) -> MailingList:
    if isinstance(list_or_slug, MailingList):
        return list_or_slug
    return get_list(session, publication_slug, list_or_slug)


# -- subscribers -------------------------------------------------------------


def get_subscriber(session: Session, email: str) -> Subscriber:
    address = checked_address(email)
    row = session.scalars(select(Subscriber).where(Subscriber.email == address)).first()
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
) -> Subscriber:
    """Add a person (or update their name and attributes) and put them on ``lists``.

    ``lists`` holds list slugs or MailingList rows; ``status`` is the status of
    the new memberships: confirmed or unconfirmed (awaiting a confirm link).
    """
    if status not in JOIN_STATUSES:
        raise InputError(Problem("field status", f"{status!r} is not a status to join with", "use confirmed or unconfirmed"))
    address = checked_address(email)
    if len(name.strip()) > NAME_MAX:
        raise InputError(Problem("field name", f"the name is longer than {NAME_MAX} characters", "shorten it"))
    targets = [_resolve_list(session, publication_slug, item) for item in lists]
    _refuse_resubscribe(session, address)
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email == address)).first()
    if subscriber is None:
        subscriber = Subscriber(email=address, name=name.strip(), attributes=dict(attributes or {}), source=source)
        session.add(subscriber)
        session.flush()
    else:
        subscriber.name = name.strip() or subscriber.name
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
    status = session.scalar(select(Subscriber.status).where(Subscriber.email == address))
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
    mailing_list = _resolve_list(session, publication_slug, list)
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
        leaving = leaving.where(Membership.list_id == _resolve_list(session, publication_slug, list).id)
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
        mailing_list = _resolve_list(session, publication_slug, list)
        statement = statement.join(Membership).where(Membership.list_id == mailing_list.id)
        if status is not None:
            _check_status(status, MEMBERSHIP_STATUSES)
            statement = statement.where(Membership.status == status)
    elif status is not None:
        _check_status(status, SUBSCRIBER_STATUSES)
        statement = statement.where(Subscriber.status == status)
    return [*session.scalars(statement)]


def _check_status(status: str, allowed: tuple[str, ...]) -> None:
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


# -- CSV import --------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did. ``problems`` names each row it did not take, by line."""

    path: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0  # rows that could not be read: bad address, unknown list ...
    not_resubscribed: int = 0  # good rows for people who unsubscribed or are suppressed
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class CsvRow:
    line: int
    email: str
    name: str
    list_ids: tuple[int, ...]
    attributes: dict


class RowRejected(Exception):
    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message, self.fix = message, fix


def import_csv(
    session: Session,
    path: str | Path,
    list_slugs: Iterable[str] = (),
    publication_slug: str | None = None,
    status: str = "confirmed",
) -> ImportReport:
    """Add or update the subscribers in a CSV file; the file's bad rows are reported, not fatal.

    Columns: email (required), name, lists (list slugs separated by ";", added
    to ``list_slugs``); any other column becomes a custom attribute. Importing
    the same file again changes nothing.
    """
    if status not in JOIN_STATUSES:
        raise InputError(Problem("field status", f"{status!r} is not a status to join with", "use confirmed or unconfirmed"))
    default_ids = tuple(get_list(session, publication_slug, slug).id for slug in list_slugs)
    lists_by_slug = _lists_by_slug(session, publication_slug)
    report = ImportReport(path=str(path))
    rows = _read_rows(Path(path), lists_by_slug, default_ids, report)
    for chunk in chunks(rows, CHUNK):
        _apply_chunk(session, chunk, status, report)
    session.flush()
    report.problems.sort(key=lambda problem: int(problem.where.rsplit(":", 1)[1]))  # in file order
    return report


def _lists_by_slug(session: Session, publication_slug: str | None) -> dict[str, int | None]:
    """Slug -> list id; None marks a slug that several publications use."""
    query = select(MailingList.slug, MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    found: dict[str, int | None] = {}
    for slug, list_id in session.execute(query):
        found[slug] = None if slug in found else list_id
    return found


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(Problem(str(path), f"cannot read the file: {exc.strerror}", "check the path")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            Problem(f"{path}:{line}", "the file is not UTF-8 text",
                    "save it as 'CSV UTF-8' (in a spreadsheet: Save As, CSV UTF-8) and import it again")
        ) from None


def _header(path: Path, reader) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(Problem(f"{path}:1", f"cannot read the header: {exc}", "")) from None
    if not header:
        raise InputError(Problem(str(path), "the file is empty", "the first line must name the columns, e.g. email,name,lists"))
    columns = [name.strip().lower() for name in header]
    if "email" not in columns:
        raise InputError(
            Problem(f"{path}:1", f"no email column (the columns are: {', '.join(columns)})",
                    "the first line must name the columns, e.g. email,name,lists")
        )
    repeated = sorted({name for name in columns if name and columns.count(name) > 1})
    if repeated:
        raise InputError(Problem(f"{path}:1", f"columns named twice: {', '.join(repeated)}", "give each column its own name"))
    return columns


def _read_rows(path: Path, lists_by_slug: dict, default_ids: tuple[int, ...], report: ImportReport) -> list[CsvRow]:
    """Every good row, each address once; rejected rows go into the report."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    columns = _header(path, reader)
    rows: list[CsvRow] = []
    first_line: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader, None)
        except csv.Error as exc:
            raise InputError(Problem(f"{path}:{reader.line_num}", f"the CSV cannot be read here: {exc}", "correct the quoting")) from None
        if values is None:
            return rows
        try:
            row = _parse_row(values, columns, line, lists_by_slug, default_ids)
            if row is not None and row.email in first_line:
                raise RowRejected(f"{row.email} is also on line {first_line[row.email]}", "keep one row per address")
        except RowRejected as exc:
            report.rejected += 1
            report.problems.append(Problem(f"{path}:{line}", exc.message, exc.fix))
        else:
            if row is not None:
                first_line[row.email] = line
                rows.append(row)
        line = reader.line_num + 1


def _parse_row(values: list[str], columns: list[str], line: int, lists_by_slug: dict, default_ids: tuple) -> CsvRow | None:
    if not any(value.strip() for value in values):
        return None  # a blank line, or only commas
    if len(values) > len(columns):
        raise RowRejected(f"{len(values)} values but {len(columns)} columns", "quote values that contain commas")
    cells = {column: value.strip() for column, value in zip(columns, values) if column}
    email = cells.pop("email", "")
    if not email:
        raise RowRejected("no email address", "fill the email column or delete the row")
    try:
        address = normalise_address(email)
    except EmailNotValidError as exc:
        raise RowRejected(f"{email!r} is not an email address: {exc}", "correct the address") from None
    name = cells.pop("name", "")
    if len(name) > NAME_MAX:
        raise RowRejected(f"the name is longer than {NAME_MAX} characters", "shorten it")
    list_ids = _row_list_ids(cells.pop("lists", ""), lists_by_slug, default_ids)
    attributes = {key: value for key, value in cells.items() if value}
    return CsvRow(line=line, email=address, name=name, list_ids=list_ids, attributes=attributes)


def _row_list_ids(cell: str, lists_by_slug: dict, default_ids: tuple[int, ...]) -> tuple[int, ...]:
    ids = [*default_ids]
    for slug in (part.strip() for part in cell.split(";")):
        if not slug:
            continue
        if slug not in lists_by_slug:
            raise RowRejected(f"unknown list {slug!r}", "`newsletter lists list` shows the lists; create it or correct the lists column")
        if lists_by_slug[slug] is None:
            raise RowRejected(f"several publications have a list {slug!r}", "import with --publication")
        ids.append(lists_by_slug[slug])
    if not ids:
        raise RowRejected("no list to add this address to", "fill the lists column or import with --list")
    return tuple(dict.fromkeys(ids))


# -- writing an import -------------------------------------------------------


@dataclass
class _Writes:
    new_subscribers: list[dict] = field(default_factory=list)
    subscriber_updates: list[dict] = field(default_factory=list)
    new_memberships: list[tuple[str, int]] = field(default_factory=list)  # (email, list id)
    membership_updates: list[dict] = field(default_factory=list)


def _apply_chunk(session: Session, rows: list[CsvRow], status: str, report: ImportReport) -> None:
    emails = [row.email for row in rows]
    existing = {
        row.email: row
        for row in session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.attributes)
            .where(Subscriber.email.in_(emails))
        )
    }
    keys = {key: email for email in emails for key in suppression_keys(email)}
    suppressed = {keys[key] for key in session.scalars(select(Suppression.email).where(Suppression.email.in_(keys)))}
    list_ids = {list_id for row in rows for list_id in row.list_ids}
    memberships = _memberships(session, [row.id for row in existing.values()], list_ids)
    writes, now = _Writes(), utcnow()
    for row in rows:
        _plan_row(row, existing.get(row.email), row.email in suppressed, memberships, status, now, writes, report)
    _write(session, writes, status, now)


def _memberships(session: Session, subscriber_ids: list[int], list_ids: set[int]) -> dict[tuple[int, int], tuple[int, str]]:
    """(subscriber id, list id) -> (membership id, status), for the lists a chunk names."""
    return {
        (subscriber_id, list_id): (membership_id, status)
        for membership_id, subscriber_id, list_id, status in session.execute(
            select(Membership.id, Membership.subscriber_id, Membership.list_id, Membership.status)
            # list_id first: the (list_id, subscriber_id) unique index serves this.
            .where(Membership.list_id.in_(list_ids), Membership.subscriber_id.in_(subscriber_ids))
        )
    }


def _plan_row(row: CsvRow, current, suppressed: bool, memberships: dict, status: str, now, writes: _Writes, report: ImportReport) -> None:
    """Decide what one row changes, and count it."""
    where = f"{report.path}:{row.line}"
    if suppressed or (current is not None and current.status != "active"):
        why = "is on the suppression list" if suppressed else f"has {current.status}"
        report.not_resubscribed += 1
        report.problems.append(Problem(where, f"{row.email} {why}; an import does not resubscribe", severity="warning"))
        return
    if current is None:
        writes.new_subscribers.append(
            {"email": row.email, "name": row.name, "status": "active", "attributes": row.attributes,
             "source": "import", "created_at": now, "updated_at": now}
        )
        writes.new_memberships.extend((row.email, list_id) for list_id in row.list_ids)
        report.added += 1
        return
    changed = _plan_subscriber_update(row, current, now, writes)
    left = 0
    for list_id in row.list_ids:
        membership = memberships.get((current.id, list_id))
        if membership is None:
            writes.new_memberships.append((row.email, list_id))
            changed = True
        elif membership[1] == "unsubscribed":
            left += 1
        elif membership[1] == "unconfirmed" and status == "confirmed":
            writes.membership_updates.append({"id": membership[0], "status": "confirmed", "updated_at": now})
            changed = True
    if left:
        report.problems.append(
            Problem(where, f"{row.email} left {left} of these lists; an import does not rejoin them", severity="warning")
        )
    if changed:
        report.updated += 1
    elif left:
        report.not_resubscribed += 1
    else:
        report.unchanged += 1


def _plan_subscriber_update(row: CsvRow, current, now, writes: _Writes) -> bool:
    # An empty cell keeps what is stored: leaving a column out erases nothing.
    name = row.name or current.name
    attributes = {**(current.attributes or {}), **row.attributes}
    if name == current.name and attributes == (current.attributes or {}):
        return False
    writes.subscriber_updates.append({"id": current.id, "name": name, "attributes": attributes, "updated_at": now})
    return True


def _write(session: Session, writes: _Writes, status: str, now) -> None:
    if writes.new_subscribers:
        session.execute(insert_ignoring(session, Subscriber, ["email"]), writes.new_subscribers)
    if writes.subscriber_updates:
        session.execute(update(Subscriber), writes.subscriber_updates)
    if writes.membership_updates:
        session.execute(update(Membership), writes.membership_updates)
    if writes.new_memberships:
        ids = _subscriber_ids(session, {email for email, _ in writes.new_memberships})
        rows = [
            {"list_id": list_id, "subscriber_id": ids[email], "status": status, "created_at": now, "updated_at": now}
            for email, list_id in writes.new_memberships
        ]
        session.execute(insert_ignoring(session, Membership, ["list_id", "subscriber_id"]), rows)


def _subscriber_ids(session: Session, emails: set[str]) -> dict[str, int]:
    found = session.execute(select(Subscriber.email, Subscriber.id).where(Subscriber.email.in_(emails)))
    return {email: subscriber_id for email, subscriber_id in found}


# -- CSV export --------------------------------------------------------------

EXPORT_PAGE = 5000


def export_csv(
    session: Session,
    path_or_file: str | Path | TextIO,
    list=None,
    *,
    publication_slug: str | None = None,
    status: str = "confirmed",
) -> int:
    """Write the active subscribers whose membership has ``status`` as CSV; returns the rows written.

    The columns are the ones ``import_csv`` reads, so an export imports back
    unchanged. Unsubscribed people are never exported: an export imported
    elsewhere must not sign them up again.
    """
    _check_status(status, JOIN_STATUSES)
    list_ids = _export_list_ids(session, list, publication_slug)
    if isinstance(path_or_file, (str, Path)):
        return _export_to_path(session, Path(path_or_file), list_ids, status)
    return _write_export(session, path_or_file, list_ids, status)


def _export_list_ids(session: Session, list, publication_slug: str | None) -> list[int]:
    if list is not None:
        return [_resolve_list(session, publication_slug, list).id]
    query = select(MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    return [*session.scalars(query)]


def _export_to_path(session: Session, path: Path, list_ids: list[int], status: str) -> int:
    # Written beside the target and renamed into place: never half a file.
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", dir=path.parent or ".",
                                         prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            count = _write_export(session, handle, list_ids, status)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return count


def _write_export(session: Session, out: TextIO, list_ids: list[int], status: str) -> int:
    keys = sorted({key for attributes in _export_pages(session, list_ids, status, attributes_only=True) for key in attributes})
    keys = [key for key in keys if key not in CSV_COLUMNS]
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, *keys])
    count = 0
    for subscriber_id, email, name, attributes, slugs in _export_pages(session, list_ids, status):
        writer.writerow([email, name, ";".join(slugs), *(attributes.get(key, "") for key in keys)])
        count += 1
    return count


def _export_pages(session: Session, list_ids: list[int], status: str, attributes_only: bool = False) -> Iterator:
    """Keyset pages of the exported subscribers, so memory stays flat however many there are."""
    member = select(Membership.id).where(
        Membership.subscriber_id == Subscriber.id, Membership.status == status, Membership.list_id.in_(list_ids)
    )
    query = (
        select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.attributes)
        .where(Subscriber.status == "active", exists(member))
        .order_by(Subscriber.id)
        .limit(EXPORT_PAGE)
    )
    after = None
    while True:
        page = session.execute(query if after is None else query.where(Subscriber.id > after)).all()
        if not page:
            return
        after = page[-1].id
        if attributes_only:
            yield from (row.attributes or {} for row in page)
            continue
        slugs = _export_slugs(session, [row.id for row in page], list_ids, status)
        for row in page:
            yield row.id, row.email, row.name, row.attributes or {}, slugs.get(row.id, [])


def _export_slugs(session: Session, page_ids: list[int], list_ids: list[int], status: str) -> dict[int, list[str]]:
    """Each subscriber's list slugs, for one page. An id range, not IN (ids), so the
    (list, status, subscriber) index answers it without a plan that depends on statistics."""
    slug_of = {list_id: slug for list_id, slug in session.execute(select(MailingList.id, MailingList.slug))}
    found: dict[int, list[str]] = {}
    rows = session.execute(
        select(Membership.subscriber_id, Membership.list_id).where(
            Membership.list_id.in_(list_ids), Membership.status == status,
            Membership.subscriber_id.between(page_ids[0], page_ids[-1]),
        )
    )
    for subscriber_id, list_id in rows:
        found.setdefault(subscriber_id, []).append(slug_of[list_id])
    return {subscriber_id: sorted(slugs) for subscriber_id, slugs in found.items()}
