"""What every subscriber CSV file shares, in and out: the columns, spreadsheet
formulas neutralised on the way out and restored on the way in, one writer
that does it, files written whole or not at all, and the text and header of a
file read in.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path
from typing import TextIO

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


def read_text(path: Path) -> str:
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


def read_header(path: Path, lines: list[str]) -> tuple[list[str], int]:
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
