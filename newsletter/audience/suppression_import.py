"""A suppression list in from a CSV file: what a team moving from another
provider brings with it (its bounces, complaints and unsubscribes), so that
nobody who asked to stop, or whose address is dead, is mailed again by the
first send from here.

Columns: ``email`` (required); ``reason`` (hard_bounce, complaint,
soft_bounce or manual, or another provider's word for one of them:
``REASON_WORDS``; the ``--reason`` given for the file when the column is
absent or a cell is empty); ``note`` (why, for the record; the file's name
when empty). A row that cannot be used is rejected with its line and the rest
are taken; an address suppressed already keeps its entry as it is, so
importing the same file again changes nothing. Suppression is by the address's
key (``suppressions.suppression_key``), as everywhere: ``Someone@Example.org``
suppresses ``someone@example.org``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.addresses import normalise_address
from newsletter.audience.csv_format import HeaderRules, read_header, read_source, unformula
from newsletter.audience.csv_import import RowProblem
from newsletter.audience.subscribers import CHUNK, chunks
from newsletter.audience.suppressions import erased_keys, suppression_key
from newsletter.errors import InputError, Problem, spelling_fix
from newsletter.store.bulk import insert_many_ignoring
from newsletter.store.lookups import among
from newsletter.store.models import Suppression, utcnow

# What a person may suppress an address for; "erased" is the erasure's own.
IMPORT_REASONS = ("hard_bounce", "complaint", "soft_bounce", "manual")
# The words other providers' exports use for them (Mailchimp's "cleaned",
# SendGrid's "spam reports", ...): an unsubscribe from elsewhere is kept as manual.
REASON_WORDS = {
    **{word: "hard_bounce" for word in ("bounce", "bounced", "bounces", "hard_bounces", "cleaned", "invalid",
                                        "invalid_email", "invalid_emails")},
    **{word: "complaint" for word in ("complaints", "spam", "spam_report", "spam_reports", "abuse")},
    **{word: "manual" for word in ("unsubscribed", "unsubscribe", "unsubscribes", "global_unsubscribe",
                                   "global_unsubscribes", "blocked", "suppressed")},
}
RULES = HeaderRules(True, "email,reason,note", "import it again")
NOTE_MAX = 200


@dataclass
class SuppressionImportReport:
    """What an import of suppressions did; ``problems`` names each row it did not take, by line."""

    path: str
    added: int = 0
    already: int = 0  # suppressed before (or twice in the file): kept as they were
    rejected: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    def reject(self, line: int, message: str, fix: str, column: str = "") -> None:
        self.rejected += 1
        self.problems.append(RowProblem(f"{self.path}:{line}", message, fix, line=line, column=column))


def import_suppressions(session: Session, source: TextIO | str | Path, reason: str = "manual", *,
                        name: str = "", rules: HeaderRules = RULES,
                        reason_field: str = "--reason") -> SuppressionImportReport:
    """Suppress every address in the CSV ``source`` (a path, or a text stream opened
    with ``newline=""``); bad rows are reported, not fatal. Problems name the file
    by ``name``, the stream's own name, or the path; a ``reason`` that is not one,
    the ``reason_field`` it was given in. ``rules``: the words of the advice about
    the file's first line (the console's upload says "upload it again")."""
    if reason not in IMPORT_REASONS:
        raise InputError(Problem(reason_field, f"{reason!r} is not a reason to suppress for",
                                 spelling_fix(reason, IMPORT_REASONS, "reasons are")))
    where, text = read_source(source, name)
    header = read_header(text.splitlines(keepends=True), where, rules)
    report = SuppressionImportReport(path=where)
    rows = _rows(text, header, where, reason, report)
    if not rows and not report.problems and not report.already:
        raise InputError(Problem(where, "the file has no rows under its first line",
                                 f"add a row for each address under the column names ({rules.example}), "
                                 f"and {rules.again}"))
    for chunk in chunks(list(rows.values()), CHUNK):
        keys = [row["email"] for row in chunk]
        known = set(session.scalars(select(Suppression.email).where(among(session, Suppression.email, keys))))
        erased = _erased(session, [row for row in chunk if row["email"] not in known])
        new = [row for row in chunk if row["email"] not in known and row["email"] not in erased]
        insert_many_ignoring(session, Suppression, new, ["email"], same={"created_at": utcnow()})
        report.added += len(new)
        report.already += len(chunk) - len(new)
    session.flush()
    report.problems.sort(key=lambda problem: problem.line)
    return report


def _rows(text: str, header, where: str, reason: str, report: SuppressionImportReport) -> dict[str, dict]:
    """The file's good rows by key (the first row of an address wins; a later one counts as already there)."""
    columns = header.columns
    email_at, reason_at = columns.index("email"), columns.index("reason") if "reason" in columns else None
    note_at = columns.index("note") if "note" in columns else None
    default_note = f"imported from {Path(where).name}"[:NOTE_MAX]
    rows: dict[str, dict] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    try:
        for number, values in enumerate(reader):
            start, line = line, reader.line_num + 1
            if number < 1 or not any(value.strip() for value in values):
                continue  # the header, or an empty line
            cell = lambda at: unformula(values[at].strip()) if at is not None and at < len(values) else ""  # noqa: E731
            address = cell(email_at)
            if not address:
                report.reject(start, "no address in the email column", "fill it in, or delete the row", "email")
                continue
            try:
                key = suppression_key(normalise_address(address))
            except EmailNotValidError as exc:
                report.reject(start, f"{address!r} is not an email address: {exc}", "correct the address", "email")
                continue
            why = cell(reason_at).lower().replace(" ", "_").replace("-", "_") or reason
            why = REASON_WORDS.get(why, why)
            if why not in IMPORT_REASONS:
                report.reject(start, f"{cell(reason_at)!r} is not a reason to suppress for",
                              spelling_fix(why, IMPORT_REASONS, "reasons are"), "reason")
                continue
            if key in rows:
                report.already += 1
                continue
            rows[key] = {"email": key, "reason": why, "source": (cell(note_at) or default_note)[:NOTE_MAX]}
    except csv.Error as exc:
        report.reject(line, f"the CSV cannot be read from here: {exc}", "correct the quoting on this line")
    return rows


def _erased(session: Session, rows: list[dict]) -> set[str]:
    """The keys among ``rows`` whose address was erased on request (its entry is a hash)."""
    hashes = {h: row["email"] for row in rows for h in erased_keys(row["email"])}
    if not hashes:
        return set()
    found = session.scalars(select(Suppression.email).where(among(session, Suppression.email, list(hashes))))
    return {hashes[h] for h in found}
