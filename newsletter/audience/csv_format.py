"""What every subscriber CSV file shares, in and out: the columns, spreadsheet
formulas neutralised on the way out and restored on the way in, one writer
that does it, files written whole or not at all, and the text of a file read
in with the one check of its header (``read_header``) that the CLI's import
and the console's upload both make, each in its own words (``HeaderRules``).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError

from newsletter.addresses import normalise_address
from newsletter.errors import InputError, Problem

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


PROBLEM_COLUMNS = ("line", "column", "severity", "problem", "what to do")


class SafeWriter:
    """A csv.writer whose text cells are formula_safe: names come from a public
    sign-up form, and an exported file is opened in a spreadsheet."""

    def __init__(self, out: TextIO):
        self._writer = csv.writer(out)

    def writerow(self, values: list) -> None:
        self._writer.writerow([formula_safe(value) if isinstance(value, str) else value for value in values])

    def writerows(self, rows) -> None:
        for values in rows:
            self.writerow(values)


def write_whole(path: Path, write):
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


@dataclass(frozen=True)
class HeaderRules:
    """What a way in asks of a file's first line, and the words of its advice."""

    email_required: bool  # False where the columns are mapped after the upload
    example: str  # the columns an example first line names
    again: str  # what to do once the file is corrected


FILE = HeaderRules(True, "email,name,lists", "import it again")  # `newsletter subscribers import`
UPLOAD = HeaderRules(False, "email,name", "upload it again")  # the console's upload, mapped after


@dataclass(frozen=True)
class Header:
    names: list[str]  # as the file spells them, without spaces around or a formula's quote
    lines: int  # the lines the header takes

    @property
    def columns(self) -> list[str]:
        """The names as the importer reads them: email, name, lists and custom fields, in lower case."""
        return [name.lower() for name in self.names]


def read_source(source: TextIO | str | Path, name: str = "") -> tuple[str, str]:
    """What names a CSV source in problems (``name``, or the path, or the stream's own name), and
    its text: a path's file read as UTF-8, or a text stream read to its end (a byte order mark
    dropped, as from a file)."""
    if isinstance(source, (str, Path)):
        where = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise InputError(Problem(where, f"cannot read the file: {exc.strerror}", "check the path")) from None
        return where, decode_text(data, where)
    where = name or str(getattr(source, "name", "")) or "the CSV text"
    try:
        return where, source.read().removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise InputError(Problem(where, "the file is not UTF-8 text", _save_as_utf8(FILE))) from None


def decode_text(data: bytes, where: str, rules: HeaderRules = FILE) -> str:
    """The file's text (UTF-8, a byte order mark dropped); InputError naming the line that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(Problem(f"{where}:{line}", "the file is not UTF-8 text", _save_as_utf8(rules))) from None


def _save_as_utf8(rules: HeaderRules) -> str:
    return f"save it as 'CSV UTF-8' (in a spreadsheet: Save As, CSV UTF-8) and {rules.again}"


def read_header(lines: list[str], where: str, rules: HeaderRules = FILE) -> Header:
    """The first record of the file's ``lines`` checked as the names of its columns: one check
    for every way in. InputError names the file and line, what is wrong and what to do."""
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise InputError(Problem(f"{where}:1", f"cannot read the first line: {exc}", "correct its quoting")) from None
    if not any(line.strip() for line in lines):
        raise InputError(Problem(where, "the file is empty", f"the first line must name the columns, e.g. {rules.example}"))
    if any("\x00" in name for name in header):
        raise InputError(Problem(f"{where}:1", "the header contains NUL characters (zero bytes): the file is not CSV text",
                                 f"save it as 'CSV UTF-8' (not 'Unicode text' or UTF-16) and {rules.again}"))
    names = [unformula(name.strip()) for name in header]
    if address := next((name for name in names if _is_address(name)), None):
        raise InputError(Problem(f"{where}:1", f"the first line holds an address ({address}), not column names",
                                 f"add a first line that names the columns, e.g. {rules.example}, and {rules.again}"))
    if not any(names):
        raise InputError(Problem(f"{where}:1", "the first line names no columns",
                                 f"the first line must name the columns, e.g. {rules.example}"))
    found = Header(names, reader.line_num)
    columns = found.columns
    if rules.email_required and "email" not in columns:
        raise InputError(Problem(f"{where}:1", f"no email column (the columns are: {', '.join(columns)})",
                                 f"the first line must name the columns, e.g. {rules.example}"))
    repeated = sorted({name for name in columns if name and columns.count(name) > 1})
    if repeated:
        raise InputError(Problem(f"{where}:1", f"columns named twice: {', '.join(repeated)}", "give each column its own name"))
    return found


def _is_address(text: str) -> bool:
    try:
        normalise_address(text)
    except EmailNotValidError:
        return False
    return True
