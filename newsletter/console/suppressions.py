"""The suppression list in the console: view, search, add with a reason, remove with a reason,
and import another provider's list from an uploaded CSV file.

Takes in a search text or an address and a reason typed by a person; hands
on pages of ``Suppression`` rows. Adding and removing call what
``newsletter suppressions add|remove`` call (``feedback.events``), so the
address is checked as an import checks it, and each writes an audit entry in
the same transaction. An uploaded file is read as every CSV upload is
(``imports.upload_text``: at most ``imports.MAX_BYTES``, UTF-8), then as
``newsletter suppressions import`` reads one (``suppression_import``), with
one audit entry for the whole file. The list is the whole install's: one
entry stops mail from every publication.

Removing a complaint's entry needs an admin: the person said the mail was
unwanted. An erased address (kept only as a hash) cannot be removed at all.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from newsletter.addresses import HASH_PREFIX, address_key
from newsletter.audience.csv_format import HeaderRules
from newsletter.audience.subscribers import checked_address
from newsletter.audience.suppression_import import SuppressionImportReport, import_suppressions
from newsletter.errors import InputError, NotFound, Problem
from newsletter.feedback import events
from newsletter.accounts import audit
from newsletter.console import imports
from newsletter.console.subscribers import REASONS, require_admin
from newsletter.console.workflow import Actor
from newsletter.store.models import Suppression

PAGE_SIZE = 50
REASON_MAX = 200
ADMIN_ONLY = ("complaint",)
UPLOAD = HeaderRules(True, "email,reason,note", "upload it again")  # the advice of an uploaded file's problems


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[Suppression]
    next_before: int | None  # newest first: pass as ``before`` for the next page, None on the last
    list_has_entries: bool


def search(session: Session, text: str = "", reason: str = "", before: int | None = None,
           limit: int = PAGE_SIZE) -> SuppressionPage:
    """A page of entries, newest first (keyset on id); ``text`` matches part of the address, in any case."""
    statement = select(Suppression).order_by(Suppression.id.desc()).limit(limit + 1)
    if before is not None:
        statement = statement.where(Suppression.id < before)
    if reason:
        if reason not in events.SUPPRESSION_REASONS:
            raise InputError(Problem("field reason", f"{reason!r} is not a reason for suppression",
                                     "choose one from the list"))
        statement = statement.where(Suppression.reason == reason)
    if text.strip():
        text = text.strip()
        key = address_key(text) if "@" in text else text.lower()
        statement = statement.where(Suppression.email.contains(key, autoescape=True))
    rows = list(session.scalars(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    has_any = bool(rows) or bool(session.scalar(select(exists().where(Suppression.id.is_not(None)))))
    return SuppressionPage(rows, rows[-1].id if more else None, has_any)


def is_erased_entry(row: Suppression) -> bool:
    return row.email.startswith(HASH_PREFIX)


def why_not_removable(row: Suppression, actor: Actor) -> str:
    """"" when the account may remove this entry; otherwise what stops it, for the page."""
    if is_erased_entry(row):
        return "An erased address stays suppressed for good."
    if row.reason in ADMIN_ONLY and not actor.operator.is_admin:
        return "The person complained about our mail: only an admin may remove this entry."
    return ""


def _reason(text: str, what: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise InputError(Problem("field reason", f"say why {what}", "e.g. \u201casked by phone to stop\u201d"))
    if len(text) > REASON_MAX:
        raise InputError(Problem("field reason", f"the reason is longer than {REASON_MAX} characters", "shorten it"))
    return text


def add(session: Session, actor: Actor, email: str, reason: str) -> tuple[str, bool]:
    """Suppress an address by hand; (its key, False when it was suppressed already)."""
    reason = _reason(reason, "this address must not be mailed")
    added = events.suppress_manually(session, email, f"{reason} ({actor.email})")
    key = address_key(checked_address(email))
    if added:
        audit.record(session, actor.email, "added to the suppression list", f"{key}: {reason}", client=actor.client)
    return key, added


def import_file(session: Session, actor: Actor, data: bytes, filename: str, reason: str = "manual"
                ) -> SuppressionImportReport:
    """Suppress every address in an uploaded CSV file (``reason`` for rows that give none);
    bad rows are in the report by line. InputError, and nothing stored, for a file that
    cannot be read at all. One audit entry says what the file did."""
    filename = Path(filename or "upload.csv").name[:255]
    text = imports.upload_text(data, filename, UPLOAD, "newsletter suppressions import")
    report = import_suppressions(session, io.StringIO(text, newline=""), reason, name=filename, rules=UPLOAD,
                                 reason_field="field reason")
    audit.record(session, actor.email, "imported to the suppression list",
                 f"{filename}: {report.added:,} added, {report.already:,} already there, {report.rejected:,} rejected",
                 client=actor.client)
    return report


def get(session: Session, suppression_id: int) -> Suppression:
    row = session.get(Suppression, suppression_id)
    if row is None:
        raise NotFound(f"no suppression entry {suppression_id}: it may have been removed already")
    return row


def remove(session: Session, actor: Actor, suppression_id: int, reason: str) -> Suppression:
    """Allow mail to the address again (it still has to be on a list), with the reason in the audit log."""
    row = get(session, suppression_id)
    if row.reason in ADMIN_ONLY:
        require_admin(actor, "Removing a complaint from the suppression list")
    if is_erased_entry(row):
        raise InputError(Problem("suppression", "the address was erased on request",
                                 "an erased address stays suppressed for good"))
    reason = _reason(reason, "mail to this address may start again")
    email, was, since = row.email, row.reason, row.created_at
    removed = events.remove_suppression(session, email)
    audit.record(session, actor.email, "removed from the suppression list",
                 f"{email} (was: {REASONS.get(was, was)}, since {since:%Y-%m-%d}): {reason}", client=actor.client)
    return removed
