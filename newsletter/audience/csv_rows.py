"""The rows of a subscriber CSV file read and checked, before anything is
written: each good row once, and every row that cannot be used named by its
line and column with what to do. A quote left open is found and the rows
after it are kept.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable, Iterator

from email_validator import EmailNotValidError

from newsletter.addresses import address_key
from newsletter.errors import InputError
from newsletter.audience.csv_format import read_header, unformula
from newsletter.audience.subscribers import NEVER_DELIVERED_FIX, checked_name, normalise_address


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


def read_rows(text: str, where: str, lists_by_slug: dict, default_ids: tuple[int, ...], reject: Callable[..., None],
              never: Callable[[CsvRow], str] | None = None) -> list[CsvRow]:
    """Every good row of the CSV ``text`` (named ``where`` in problems), each address once;
    ``reject(line, message, fix, column)`` is told of each other row.

    A quote that is never closed (or closed lines later) would swallow the
    rows after it into one value. Such a record is rejected with the line
    where the quote opened, and reading starts again on the next line, so
    the good rows after it are kept.
    """
    lines = io.StringIO(text, newline="").readlines()
    header = read_header(lines, where)
    columns, position = header.columns, header.lines
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
                reject(line, *_unread_record(lines, line, span, values, columns, error))
                position = line  # the index of the line after the bad one
                break
            # One person whatever the case of the letters: TWO@ repeats two@.
            if rejected is None and row is not None and row.key in first_line:
                rejected = RowRejected(f"{row.email} is also on line {first_line[row.key]}",
                                       "keep one row per address", "email")
            if rejected is None and row is not None and never is not None and (reason := never(row)):
                rejected = RowRejected(reason, NEVER_DELIVERED_FIX, "email")
            if rejected is not None:
                reject(line, rejected.message, rejected.fix, rejected.column)
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
