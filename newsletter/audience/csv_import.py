"""Subscribers in and out of CSV files: import (bad rows reported by line and
column, good rows kept, a second import of the same file changes nothing) and
export (spreadsheet formulas neutralised, and restored by import). What is
rejected and why: docs/subscribers.md.

Rows are validated in Python and written with INSERT .. ON CONFLICT in chunks
of 1,000 (on PostgreSQL one statement a chunk: store/bulk.py), never one ORM
object per row: 100,000 rows take a few seconds (bench/import.py).
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from email_validator import EmailNotValidError
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import address_key
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
from newsletter.store.lookups import among, keyset_pages
from newsletter.audience.subscribers import (
    CHUNK,
    JOIN_STATUSES,
    NEVER_DELIVERED_FIX,
    check_status,
    checked_name,
    chunks,
    get_list,
    normalise_address,
    resolve_list,
)
from newsletter.audience.suppressions import suppressed_addresses

CSV_COLUMNS = ("email", "name", "lists")
# A cell a spreadsheet would run as a formula (OWASP, "CSV Injection"), or one
# that export protected with a leading quote: quotes before such a start.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def formula_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading quote before a formula's first character.

    Values that already start with quotes and then such a character get one
    more, so ``unformula`` gives every value back exactly.
    """
    return "'" + value if _FORMULA.match(value) else value


def unformula(value: str) -> str:
    """The value ``formula_safe`` protected (a cell that is not one is kept as it is)."""
    return value[1:] if value.startswith("'") and _FORMULA.match(value, 1) else value


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
    problems: list[RowProblem] = field(default_factory=list)

    def reject(self, line: int, message: str, fix: str = "", column: str = "") -> None:
        self.rejected += 1
        self.problems.append(RowProblem(f"{self.path}:{line}", message, fix, line=line, column=column))


@dataclass(frozen=True)
class RowProblem(Problem):
    """A problem with one line of the file, and the column it is in ("" for the whole row)."""

    line: int = 0
    column: str = ""


@dataclass(frozen=True)
class CsvRow:
    line: int
    email: str
    name: str
    list_ids: tuple[int, ...]
    attributes: dict
    key: str = ""  # address_key(email): who the person is

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", address_key(self.email))


class RowRejected(Exception):
    def __init__(self, message: str, fix: str = "", column: str = ""):
        super().__init__(message)
        self.message, self.fix, self.column = message, fix, column


def import_csv(
    session: Session,
    path: str | Path,
    list_slugs: Iterable[str] = (),
    publication_slug: str | None = None,
    status: str = "confirmed",
    progress: Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
) -> ImportReport:
    """Add or update the subscribers in a CSV file; the file's bad rows are reported, not fatal.

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
    report = ImportReport(path=str(path))
    never = _never_delivered(session, settings) if settings is not None else None
    rows = _read_rows(Path(path), lists_by_slug, default_ids, report, never)
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


def _header(path: Path, lines: list[str]) -> tuple[list[str], int]:
    """The column names, and how many lines the header takes."""
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(Problem(f"{path}:1", f"cannot read the header: {exc}", "")) from None
    if not header:
        raise InputError(Problem(str(path), "the file is empty", "the first line must name the columns, e.g. email,name,lists"))
    if any("\x00" in name for name in header):
        raise InputError(Problem(f"{path}:1", "the header contains NUL characters (zero bytes): the file is not CSV text",
                                 "save it as 'CSV UTF-8' (not 'Unicode text' or UTF-16) and import it again"))
    columns = [unformula(name.strip()).lower() for name in header]
    if "email" not in columns:
        raise InputError(
            Problem(f"{path}:1", f"no email column (the columns are: {', '.join(columns)})",
                    "the first line must name the columns, e.g. email,name,lists")
        )
    repeated = sorted({name for name in columns if name and columns.count(name) > 1})
    if repeated:
        raise InputError(Problem(f"{path}:1", f"columns named twice: {', '.join(repeated)}", "give each column its own name"))
    return columns, reader.line_num


def _read_rows(path: Path, lists_by_slug: dict, default_ids: tuple[int, ...], report: ImportReport,
               never: Callable[[CsvRow], str] | None = None) -> list[CsvRow]:
    """Every good row, each address once; rejected rows go into the report.

    A quote that is never closed (or closed lines later) would swallow the
    rows after it into one value. Such a record is rejected with the line
    where the quote opened, and reading starts again on the next line, so
    the good rows after it are kept.
    """
    lines = io.StringIO(_read_text(path), newline="").readlines()
    columns, position = _header(path, lines)
    rows: list[CsvRow] = []
    first_line: dict[str, int] = {}
    while position is not None:
        records, position = _records(lines, position), None
        for line, span, values, error in records:
            row, rejected = None, None
            try:
                if error is None:
                    row = _parse_row(values, columns, line, lists_by_slug, default_ids)
            except RowRejected as exc:
                rejected = exc
            at_end = line + span > len(lines)  # a quote opened on the last line spans no other
            if error is not None or ((span > 1 or at_end) and _quote_left_open(lines, line, span, columns)):
                report.reject(line, *_unread_record(lines, line, span, values, columns, error))
                position = line  # the index of the line after the bad one
                break
            # One person whatever the case of the letters: TWO@ repeats two@.
            if rejected is None and row is not None and row.key in first_line:
                rejected = RowRejected(f"{row.email} is also on line {first_line[row.key]}",
                                       "keep one row per address", "email")
            if rejected is None and row is not None and never is not None and (reason := never(row)):
                rejected = RowRejected(reason, NEVER_DELIVERED_FIX, "email")
            if rejected is not None:
                report.reject(line, rejected.message, rejected.fix, rejected.column)
            elif row is not None:
                first_line[row.key] = line
                rows.append(row)
    return rows


def _records(lines: list[str], start: int) -> Iterator[tuple[int, int, list[str], str | None]]:
    """(first line number, lines it takes, values, csv error or None) of each record from lines[start];
    an error ends it."""
    reader = csv.reader(lines[i] for i in range(start, len(lines)))
    consumed = 0
    while True:
        try:
            values = next(reader, None)
        except csv.Error as exc:
            yield start + consumed + 1, max(reader.line_num - consumed, 1), [], str(exc)
            return
        if values is None:
            return
        yield start + consumed + 1, reader.line_num - consumed, values, None
        consumed = reader.line_num


def _quote_left_open(lines: list[str], line: int, span: int, columns: list[str]) -> bool:
    """True if a record over several lines is a quote left open, not a value with line breaks:
    it runs to the end of the file unclosed, or a line inside it reads as a row of its own."""
    return _open_at_end(lines[line - 1 : line - 1 + span]) or _swallows_rows(lines[line : line - 1 + span], columns)


def _open_at_end(lines: list[str]) -> bool:
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _swallows_rows(lines: list[str], columns: list[str]) -> bool:
    email_at = columns.index("email")
    for text in lines:
        values = next(csv.reader([text]), [])
        if len(values) > email_at:
            try:
                normalise_address(values[email_at])
                return True
            except EmailNotValidError:
                continue
    return False


def _unread_record(lines: list[str], line: int, span: int, values: list[str], columns: list[str], error: str | None):
    """Message, fix and column for a record that could not be read as one row."""
    if span == 1 and error is not None:
        return f"the line cannot be read as CSV: {error}", "correct the quoting", ""
    column = next((name for name, value in zip(columns, values) if "\n" in value or "\r" in value), "")
    quote = f'a quote (") opened on this line{f" in the {column} column" if column else ""}'
    end = line + span - 1
    if error is not None:
        what = f"{quote} is not closed within the {span - 1} lines after it ({error})"
    elif _open_at_end(lines[line - 1 : end]):
        what = f"{quote} is never closed, so every line after it was read as part of one value"
    else:
        what = f"{quote} is closed only on line {end}, so lines {line + 1} to {end} were read as part of one value"
    return (f"{what}; this line is rejected and the lines after it are read as rows of their own",
            'close the quote, or write a quote inside a value as two ("")', column)


def _parse_row(values: list[str], columns: list[str], line: int, lists_by_slug: dict, default_ids: tuple) -> CsvRow | None:
    if not any(value.strip() for value in values):
        return None  # a blank line, or only commas
    if len(values) > len(columns):
        raise RowRejected(f"{len(values)} values but {len(columns)} columns", "quote values that contain commas")
    cells = {column: unformula(value.strip()) for column, value in zip(columns, values) if column}
    for column, value in cells.items():
        if "\x00" in value:
            # PostgreSQL cannot store one, and nothing a person types has one.
            raise RowRejected(f"the {column} column contains a NUL character (a zero byte)",
                              "the file may be damaged: delete the character, or save the file again as CSV UTF-8", column)
    email = cells.pop("email", "")
    if not email:
        raise RowRejected("no email address", "fill the email column or delete the row", "email")
    try:
        address = normalise_address(email)
    except EmailNotValidError as exc:
        raise RowRejected(f"{email!r} is not an email address: {exc}", "correct the address", "email") from None
    try:
        name = checked_name(cells.pop("name", ""))
    except InputError as exc:
        raise RowRejected(exc.problems[0].message, exc.problems[0].fix, "name") from None
    list_ids = _row_list_ids(cells.pop("lists", ""), lists_by_slug, default_ids)
    attributes = {key: value for key, value in cells.items() if value}
    return CsvRow(line=line, email=address, name=name, list_ids=list_ids, attributes=attributes)


def _row_list_ids(cell: str, lists_by_slug: dict, default_ids: tuple[int, ...]) -> tuple[int, ...]:
    ids = [*default_ids]
    for slug in (part.strip() for part in cell.split(";")):
        if not slug:
            continue
        if slug not in lists_by_slug:
            raise RowRejected(f"unknown list {slug!r}", "`newsletter lists list` shows the lists; create it or correct the lists column",
                              "lists")
        if lists_by_slug[slug] is None:
            raise RowRejected(f"several publications have a list {slug!r}", "import with --publication", "lists")
        ids.append(lists_by_slug[slug])
    if not ids:
        raise RowRejected("no list to add this address to", "fill the lists column or import with --list", "lists")
    return tuple(dict.fromkeys(ids))


PROBLEM_COLUMNS = ("line", "column", "severity", "problem", "what to do")


def write_problems(report: ImportReport, path: str | Path) -> int:
    """Every problem of an import as CSV (line, column, severity, problem, what to do); returns how many."""

    def write(out: TextIO) -> int:
        writer = _SafeWriter(out)
        writer.writerow(PROBLEM_COLUMNS)
        for problem in report.problems:
            writer.writerow([problem.line, problem.column, problem.severity, problem.message, problem.fix])
        return len(report.problems)

    return _write_whole(Path(path), write)


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
    check_status(status, JOIN_STATUSES)
    list_ids = _export_list_ids(session, list, publication_slug)
    if isinstance(path_or_file, (str, Path)):
        return _export_to_path(session, Path(path_or_file), list_ids, status)
    return _write_export(session, path_or_file, list_ids, status)


def _export_list_ids(session: Session, list, publication_slug: str | None) -> list[int]:
    if list is not None:
        return [resolve_list(session, publication_slug, list).id]
    query = select(MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    return [*session.scalars(query)]


def _export_to_path(session: Session, path: Path, list_ids: list[int], status: str) -> int:
    return _write_whole(path, lambda handle: _write_export(session, handle, list_ids, status))


def _write_whole(path: Path, write):
    """``write(file)`` into a file beside ``path``, renamed into place: never half a file."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", dir=path.parent or ".",
                                         prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            result = write(handle)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return result


def _write_export(session: Session, out: TextIO, list_ids: list[int], status: str) -> int:
    keys = sorted({key for attributes in _export_pages(session, list_ids, status, attributes_only=True) for key in attributes})
    keys = [key for key in keys if key not in CSV_COLUMNS]
    writer = _SafeWriter(out)
    writer.writerow([*CSV_COLUMNS, *keys])
    count = 0
    for subscriber_id, email, name, attributes, slugs in _export_pages(session, list_ids, status):
        writer.writerow([email, name, ";".join(slugs), *(attributes.get(key, "") for key in keys)])
        count += 1
    return count


class _SafeWriter:
    """A csv.writer whose text cells are formula_safe: names come from a public
    sign-up form, and an exported file is opened in a spreadsheet."""

    def __init__(self, out: TextIO):
        self._writer = csv.writer(out)

    def writerow(self, values: list) -> None:
        self._writer.writerow([formula_safe(value) if isinstance(value, str) else value for value in values])


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
    for page in keyset_pages(session, query, Subscriber.id):
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
