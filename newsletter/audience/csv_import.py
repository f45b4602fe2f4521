"""Subscribers in from CSV files: bad rows reported by line and column, good
rows kept, a second import of the same file changes nothing, and nobody who
unsubscribed or is suppressed is signed up again. What is rejected and why:
docs/subscribers.md. The rows are read and checked in ``csv_rows``; the
format both ways shares (formulas, the header) is ``csv_format``.

Rows are validated in Python and written with INSERT .. ON CONFLICT in chunks
of 1,000 (on PostgreSQL one statement a chunk: store/bulk.py), never one ORM
object per row: 100,000 rows take a few seconds (bench/import.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TextIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.errors import InputError, Problem
from newsletter.config import Settings
from newsletter.store.publications import get_publication, settings_for
from newsletter.transports import why_never_delivered
from newsletter.store.models import (
    MailingList,
    Membership,
    PublicationRow,
    Subscriber,
    utcnow,
)
from newsletter.store.bulk import insert_many_ignoring
from newsletter.store.lookups import among
from newsletter.audience.csv_format import PROBLEM_COLUMNS, SafeWriter, read_source, write_whole
from newsletter.audience.csv_rows import CsvRow, read_rows
from newsletter.audience.subscribers import CHUNK, JOIN_STATUSES, chunks, get_list
from newsletter.audience.suppressions import suppressed_addresses


@dataclass
class ImportReport:
    """What an import did. ``problems`` names each row it did not take, by line."""

    path: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0  # rows that could not be read: bad address, unknown list ...
    not_resubscribed: int = 0  # good rows for people who unsubscribed or are suppressed
    problems: list[RowProblem] = field(default_factory=list)

    def reject(self, line: int, message: str, fix: str = "", column: str = "") -> None:
        self.rejected += 1
        self.problems.append(RowProblem(f"{self.path}:{line}", message, fix, line=line, column=column))


@dataclass(frozen=True)
class RowProblem(Problem):
    """A problem with one line of the file, and the column it is in ("" for the whole row)."""

    line: int = 0
    column: str = ""


def import_csv(
    session: Session,
    source: TextIO | str | Path,
    list_slugs: Iterable[str] = (),
    publication_slug: str | None = None,
    status: str = "confirmed",
    progress: Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    *,
    name: str = "",
) -> ImportReport:
    """Add or update the subscribers in CSV text; its bad rows are reported, not fatal.

    ``source`` is a text stream (opened with ``newline=""``, as for ``csv``),
    or the path of a file (read as UTF-8, a byte that is not named by its
    line). Problems name it by ``name``, the stream's own name, or the path.
    Columns: email (required), name, lists (list slugs separated by ";", added
    to ``list_slugs``); any other column becomes a custom attribute. Importing
    the same file again changes nothing. ``progress(rows written, good rows)``
    is called after each chunk (the console's progress bar). With ``settings``,
    a row whose address its lists' publication's transport can never deliver
    to is rejected with the reason (``transports.why_never_delivered``).
    """
    if status not in JOIN_STATUSES:
        raise InputError(Problem("field status", f"{status!r} is not a status to join with", "use confirmed or unconfirmed"))
    default_ids = tuple(get_list(session, publication_slug, slug).id for slug in list_slugs)
    lists_by_slug = _lists_by_slug(session, publication_slug)
    where, text = read_source(source, name)
    report = ImportReport(path=where)
    never = _never_delivered(session, settings) if settings is not None else None
    rows = read_rows(text, where, lists_by_slug, default_ids, report.reject, never)
    done = 0
    for chunk in chunks(rows, CHUNK):
        _apply_chunk(session, chunk, status, report)
        done += len(chunk)
        if progress is not None:
            progress(done, len(rows))
    session.flush()
    report.problems.sort(key=lambda problem: problem.line)  # in file order
    return report


def _never_delivered(session: Session, settings: Settings) -> Callable[[CsvRow], str]:
    """Why a row's address can never be delivered to by the transport of one of its lists'
    publications ("" when every one can)."""
    transports = {
        list_id: settings_for(settings, publication).transport
        for list_id, publication in session.execute(select(MailingList.id, PublicationRow).join(PublicationRow))
    }

    def why(row: CsvRow) -> str:
        return next((reason for list_id in row.list_ids
                     if (reason := why_never_delivered(transports[list_id], row.email))), "")
    return why


def _lists_by_slug(session: Session, publication_slug: str | None) -> dict[str, int | None]:
    """Slug -> list id; None marks a slug that several publications use."""
    query = select(MailingList.slug, MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    found: dict[str, int | None] = {}
    for slug, list_id in session.execute(query):
        found[slug] = None if slug in found else list_id
    return found


def write_problems(report: ImportReport, path: str | Path) -> int:
    """Every problem of an import (of subscribers or of suppressions: anything with
    ``problems``) as CSV (line, column, severity, problem, what to do); returns how many."""

    def write(out: TextIO) -> int:
        writer = SafeWriter(out)
        writer.writerow(PROBLEM_COLUMNS)
        for problem in report.problems:
            writer.writerow([problem.line, problem.column, problem.severity, problem.message, problem.fix])
        return len(report.problems)

    return write_whole(Path(path), write)


# -- writing an import -------------------------------------------------------


@dataclass
class _Writes:
    new_subscribers: list[dict] = field(default_factory=list)
    subscriber_updates: list[dict] = field(default_factory=list)
    new_memberships: list[tuple[str, int]] = field(default_factory=list)  # (address key, list id)
    membership_updates: list[dict] = field(default_factory=list)


def _apply_chunk(session: Session, rows: list[CsvRow], status: str, report: ImportReport) -> None:
    # Read through the connection, with the tables' columns: plain rows, no ORM
    # loading (which cost more than the query itself).
    subscribers = Subscriber.__table__.c
    existing = {  # by key: a row finds the person whatever case it spells the address in
        row.email_key: row
        for row in session.connection().execute(
            select(subscribers.id, subscribers.email_key, subscribers.name, subscribers.status, subscribers.attributes)
            .where(among(session, subscribers.email_key, [row.key for row in rows]))
        )
    }
    suppressed = suppressed_addresses(session, [row.email for row in rows])
    list_ids = {list_id for row in rows for list_id in row.list_ids}
    memberships = _memberships(session, [row.id for row in existing.values()], list_ids) if existing else {}
    writes, now = _Writes(), utcnow()
    for row in rows:
        _plan_row(row, existing.get(row.key), row.email in suppressed, memberships, status, now, writes, report)
    _write(session, writes, status, now)


def _memberships(session: Session, subscriber_ids: list[int], list_ids: set[int]) -> dict[tuple[int, int], tuple[int, str]]:
    """(subscriber id, list id) -> (membership id, status), for the lists a chunk names."""
    memberships = Membership.__table__.c
    return {
        (subscriber_id, list_id): (membership_id, status)
        for membership_id, subscriber_id, list_id, status in session.connection().execute(
            select(memberships.id, memberships.subscriber_id, memberships.list_id, memberships.status)
            # list_id first: the (list_id, subscriber_id) unique index serves this.
            .where(memberships.list_id.in_(list_ids), among(session, memberships.subscriber_id, subscriber_ids))
        )
    }


def _plan_row(row: CsvRow, current, suppressed: bool, memberships: dict, status: str, now, writes: _Writes, report: ImportReport) -> None:
    """Decide what one row changes, and count it."""
    where = f"{report.path}:{row.line}"
    if suppressed or (current is not None and current.status != "active"):
        why = "is on the suppression list" if suppressed else f"has {current.status}"
        report.not_resubscribed += 1
        report.problems.append(RowProblem(where, f"{row.email} {why}; an import does not resubscribe", severity="warning",
                                          line=row.line, column="email"))
        return
    if current is None:
        writes.new_subscribers.append({"email": row.email, "email_key": row.key, "name": row.name, "attributes": row.attributes})
        writes.new_memberships.extend((row.key, list_id) for list_id in row.list_ids)
        report.added += 1
        return
    changed = _plan_subscriber_update(row, current, now, writes)
    left = 0
    for list_id in row.list_ids:
        membership = memberships.get((current.id, list_id))
        if membership is None:
            writes.new_memberships.append((row.key, list_id))
            changed = True
        elif membership[1] == "unsubscribed":
            left += 1
        elif membership[1] == "unconfirmed" and status == "confirmed":
            writes.membership_updates.append({"id": membership[0], "status": "confirmed", "updated_at": now})
            changed = True
    if left:
        report.problems.append(
            RowProblem(where, f"{row.email} left {left} of these lists; an import does not rejoin them", severity="warning",
                       line=row.line, column="lists")
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
    insert_many_ignoring(session, Subscriber, writes.new_subscribers, ["email_key"],
                         same={"status": "active", "source": "import", "created_at": now, "updated_at": now})
    if writes.subscriber_updates:
        session.execute(update(Subscriber), writes.subscriber_updates)
    if writes.membership_updates:
        session.execute(update(Membership), writes.membership_updates)
    if writes.new_memberships:
        ids = _subscriber_ids(session, {key for key, _ in writes.new_memberships})
        rows = [{"list_id": list_id, "subscriber_id": ids[key]} for key, list_id in writes.new_memberships]
        insert_many_ignoring(session, Membership, rows, ["list_id", "subscriber_id"],
                             same={"status": status, "created_at": now, "updated_at": now})


def _subscriber_ids(session: Session, keys: set[str]) -> dict[str, int]:
    subscribers = Subscriber.__table__.c
    found = session.connection().execute(select(subscribers.email_key, subscribers.id).where(among(session, subscribers.email_key, keys)))
    return {key: subscriber_id for key, subscriber_id in found}
