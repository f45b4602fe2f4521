"""A CSV import started in the console: upload, preview, column mapping, the
import itself (the CLI's ``import_csv``: the same validation, identity key and
consent rules), its progress, and the report of rejected rows.

The uploaded file is kept in its ``import_jobs`` row (the database, so any web
or worker host can read it) only until the import has run; then, or when an
upload is left unmapped for a day, it is deleted. The import reads it from the
row as a text stream: no copy is written to the disk of the host that runs it. A small file is imported
while the page waits; a larger one waits for a worker, which a beat task
hands it to (``due_jobs``), and the page follows ``rows_done``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from newsletter.audience.csv_format import (
    CSV_COLUMNS, PROBLEM_COLUMNS, UPLOAD, HeaderRules, SafeWriter, decode_text, read_header)
from newsletter.audience.csv_import import import_csv
from newsletter.audience.subscribers import JOIN_STATUSES
from newsletter.config import Settings
from newsletter.errors import InputError, NotFound, Problem
from newsletter.store import clock
from newsletter.store.models import ImportJob, MailingList, PublicationRow

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024  # about 100,000 rows
PREVIEW_ROWS = 10
INLINE_ROWS = 1000  # files with at most this many rows are imported while the page waits
STALE = timedelta(minutes=10)  # a job that long without progress lost its worker
TRIES = 3  # runs an import is given: one that fails unexpectedly (or loses its worker) that often is failed
UPLOAD_KEPT = timedelta(hours=24)  # an upload never mapped is deleted after this

TARGETS = ("email", "name", "lists", "field", "ignore")
TARGET_LABELS = {"email": "Email address", "name": "Name", "lists": "Lists (slugs separated by ;)",
                 "field": "Custom field", "ignore": "Ignore this column"}
_EMAIL_NAMES = {"email", "e-mail", "email address", "e-mail address", "mail", "address", "email_address"}
_NAME_NAMES = {"name", "full name", "fullname", "full_name"}
FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,59}$")


# --- the upload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the upload and what it becomes: a target of TARGETS (and a field's name)."""

    header: str
    target: str
    field: str = ""


def upload_text(data: bytes, filename: str, rules: HeaderRules = UPLOAD,
                command: str = "newsletter subscribers import") -> str:
    """An uploaded CSV file's text; InputError for one too large (``command`` takes any size),
    not text, or not UTF-8 (naming the line). Every CSV upload of the console is read so."""
    if len(data) > MAX_BYTES:
        raise InputError(Problem(filename, f"the file is {len(data) / 1024 / 1024:.1f} MB, more than the "
                                 f"{MAX_BYTES // 1024 // 1024} MB an upload may be",
                                 f"split it into smaller files, or import it with `{command}`"))
    if b"\x00" in data:  # UTF-16 ("Unicode text") or not text at all
        raise InputError(Problem(filename, "the file contains NUL characters (zero bytes): it is not CSV text",
                                 f"save it as 'CSV UTF-8' (not 'Unicode text' or UTF-16) and {rules.again}"))
    return decode_text(data, filename, rules)


def read_upload(data: bytes, filename: str) -> tuple[list[str], int]:
    """The header's column names and the number of data rows; InputError naming what is wrong.

    The header is checked as the CLI's import checks it (``csv_format.read_header``),
    but no column need be named email yet: the mapping says which one is."""
    text = upload_text(data, filename)
    lines = io.StringIO(text, newline="").readlines()
    header = read_header(lines, filename, UPLOAD)
    rows = 0
    try:
        rows = sum(1 for values in csv.reader(lines[header.lines:]) if any(value.strip() for value in values))
    except csv.Error:
        rows = max(text.count("\n") - 1, 1)  # the importer names the line it cannot read
    if not rows:
        raise InputError(Problem(filename, "the file has column names but no rows under them",
                                 "add a row per subscriber under the first line"))
    return header.names, rows


def guess_mapping(header: list[str]) -> list[Column]:
    """What each column most likely is, from its name; the person checks it."""
    columns, seen = [], set()
    for name in header:
        key = name.strip().lower()
        target = ("email" if key in _EMAIL_NAMES else "name" if key in _NAME_NAMES else "lists" if key == "lists"
                  else "field" if FIELD_NAME.match(name.strip()) and key not in CSV_COLUMNS else "ignore")
        if target in ("email", "name", "lists") and target in seen:
            target = "ignore"
        seen.add(target)
        columns.append(Column(name, target, name.strip().lower() if target == "field" else ""))
    return columns


def create_job(session: Session, publication: PublicationRow, list_slug: str, filename: str, data: bytes,
               created_by: str, join_status: str = "confirmed") -> ImportJob:
    """Check an uploaded file and keep it, with a guessed mapping, until it is mapped and imported."""
    mailing_list = _list(session, publication, list_slug)
    if join_status not in JOIN_STATUSES:
        raise InputError(Problem("status", f"{join_status!r} is not a status to join with", "choose confirmed or unconfirmed"))
    filename = Path(filename or "upload.csv").name[:255]
    header, rows = read_upload(data, filename)
    job = ImportJob(publication_id=publication.id, list_id=mailing_list.id, filename=filename, data=data,
                    size=len(data), columns=header, mapping=[_column_dict(c) for c in guess_mapping(header)],
                    join_status=join_status, rows_total=rows, created_by=created_by, state="uploaded", problems=[])
    session.add(job)
    session.flush()
    return job


def _list(session: Session, publication: PublicationRow, slug: str) -> MailingList:
    found = session.scalar(select(MailingList).where(MailingList.publication_id == publication.id,
                                                     MailingList.slug == slug))
    if found is None:
        raise InputError(Problem("list", f"{publication.slug} has no list {slug!r}" if slug else "no list is chosen",
                                 "choose one of the publication's lists"))
    return found


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"no import {job_id}")
    return job


def mapping_of(job: ImportJob) -> list[Column]:
    return [Column(**c) for c in job.mapping]


def _column_dict(column: Column) -> dict:
    return {"header": column.header, "target": column.target, "field": column.field}


def preview_rows(job: ImportJob, count: int = PREVIEW_ROWS) -> list[list[str]]:
    """The first rows as a spreadsheet would show them (the page escapes them; formulas stay text)."""
    if job.data is None:
        return []
    reader = csv.reader(io.StringIO(job.data.decode("utf-8-sig"), newline=""))
    rows = []
    try:
        next(reader, None)
        for values in reader:
            if any(value.strip() for value in values):
                rows.append(values)
            if len(rows) >= count:
                break
    except csv.Error:
        pass  # the rows read so far; the import reports the line
    return rows


def set_mapping(session: Session, job: ImportJob, targets: list[str], fields: list[str]) -> list[Column]:
    """Check and keep what each column becomes; InputError names the column (``column N``) and what to do."""
    if job.state != "uploaded":
        raise InputError(Problem(f"import {job.id}", f"this import is {job.state}", "upload the file again to change it"))
    if len(targets) != len(job.columns):
        raise InputError(Problem("mapping", "the form does not match the file's columns", "reload the page"))
    columns, problems = [], []
    for n, (header, target, field) in enumerate(zip(job.columns, targets, fields + [""] * len(targets)), start=1):
        field = field.strip() or (header.strip() if target == "field" else "")
        where = f"column {n}"
        if target not in TARGETS:
            problems.append(Problem(where, f"{target!r} is not something a column can become", "choose from the list"))
        elif target == "field" and not FIELD_NAME.match(field):
            problems.append(Problem(where, f"{field!r} cannot name a custom field" if field else "the custom field has no name",
                                    "use letters, digits, spaces, - and _ (at most 60)"))
        elif target == "field" and field.lower() in CSV_COLUMNS:
            problems.append(Problem(where, f"{field!r} is a built-in column, not a custom field", f"choose {field.lower()} instead"))
        columns.append(Column(header, target, field.lower() if target == "field" else ""))
    for target in ("email", "name", "lists"):
        chosen = [n for n, c in enumerate(columns, start=1) if c.target == target]
        if len(chosen) > 1:
            problems.append(Problem(f"column {chosen[1]}", f"columns {', '.join(map(str, chosen))} are all {TARGET_LABELS[target]}",
                                    "choose one of them; ignore the others"))
    fields = [c.field for c in columns if c.target == "field"]
    for name in sorted({f for f in fields if fields.count(f) > 1}):
        at = [n for n, c in enumerate(columns, start=1) if c.field == name]
        problems.append(Problem(f"column {at[1]}", f"columns {', '.join(map(str, at))} are all the custom field {name!r}",
                                "give each its own name"))
    if not any(c.target == "email" for c in columns):
        problems.append(Problem("column 1", "no column is the email address", "choose Email address for the column that holds them"))
    job.mapping = [_column_dict(c) for c in columns]
    if problems:
        raise InputError(sorted(problems, key=lambda p: int(p.where.split()[-1])))
    return columns


def start(session: Session, job: ImportJob) -> None:
    """The mapping is done: the job waits for a worker (or for ``run_job`` in the request)."""
    if job.state != "uploaded":
        raise InputError(Problem(f"import {job.id}", f"this import is {job.state}", "upload the file again"))
    job.state, job.updated_at = "waiting", clock.read(session)


def runs_inline(job: ImportJob) -> bool:
    return job.rows_total <= INLINE_ROWS


# --- the import, in a worker or in the request ---------------------------------------------


def due_jobs(session: Session, now=None) -> list[int]:
    """Jobs to hand to a worker now: waiting ones, and those whose worker was lost (queued or
    running with no progress for STALE); each is marked queued. Unmapped uploads past
    UPLOAD_KEPT are deleted."""
    now = clock.read(session, now)  # the database's clock: who holds a job is decided by it
    session.execute(delete(ImportJob).where(ImportJob.state == "uploaded", ImportJob.created_at < now - UPLOAD_KEPT))
    lost = ImportJob.state.in_(("queued", "running")) & (ImportJob.updated_at < now - STALE)
    for job in session.scalars(select(ImportJob).where(lost, ImportJob.tries >= TRIES)):
        _give_up(session, job)
    ids = session.scalars(select(ImportJob.id).where(or_(ImportJob.state == "waiting", lost)).order_by(ImportJob.id)).all()
    handed = []
    for job_id in ids:
        claimed = session.execute(update(ImportJob).where(ImportJob.id == job_id, or_(ImportJob.state == "waiting", lost))
                                  .values(state="queued", updated_at=now))
        if claimed.rowcount:
            handed.append(job_id)
    return handed


def claim(session: Session, job_id: int) -> bool:
    """Take a waiting or queued job to run it; False when another run has it (or it is done)."""
    taken = session.execute(update(ImportJob).where(ImportJob.id == job_id, ImportJob.state.in_(("waiting", "queued")))
                            .values(state="running", rows_done=0, tries=ImportJob.tries + 1,
                                    updated_at=clock.now_sql(session)))
    return bool(taken.rowcount)


def run_job(session: Session, job_id: int, settings: Settings | None = None) -> ImportJob | None:
    """Claim the job and import its file with the CLI's importer.

    Each chunk of rows is committed with the job's progress, so the page can
    follow it. A run lost midway is run again (``due_jobs``): an import of the
    same rows changes nothing, so the rows it wrote count as unchanged then.
    """
    if not claim(session, job_id):
        return None
    session.commit()
    job = get_job(session, job_id)
    publication = session.get(PublicationRow, job.publication_id)
    mailing_list = session.get(MailingList, job.list_id)
    if job.data is None or mailing_list is None:
        return _fail(session, job, "the uploaded file is no longer there; upload it again")

    def progress(done: int, good: int) -> None:
        job.rows_done = min(job.rows_total, max(job.rows_total - good, 0) + done)
        job.updated_at = clock.read(session)
        session.commit()

    try:
        report = import_csv(session, io.StringIO(mapped_text(job), newline=""), [mailing_list.slug], publication.slug,
                            job.join_status, progress=progress, settings=settings, name=job.filename)
    except InputError as exc:
        session.rollback()
        return _fail(session, get_job(session, job_id), "; ".join(f"{p.message} ({p.fix})" if p.fix else p.message
                                                                for p in exc.problems))
    except Exception as exc:  # noqa: BLE001 - a bug or an outage: said on the page, tried again a few times
        log.exception("import %s failed unexpectedly", job_id)
        session.rollback()
        return _failed_try(session, get_job(session, job_id), f"{type(exc).__name__}: {exc}")
    job.added, job.updated, job.unchanged = report.added, report.updated, report.unchanged
    job.rejected, job.not_resubscribed = report.rejected, report.not_resubscribed
    job.problems = [[p.line, p.column, p.severity, p.message, p.fix] for p in report.problems]
    job.rows_done, job.state, job.data, job.error = job.rows_total, "finished", None, ""  # an earlier try's error is over
    job.finished_at = job.updated_at = clock.read(session)
    session.commit()
    return job


def _failed_try(session: Session, job: ImportJob, error: str) -> ImportJob:
    """A run that failed unexpectedly: the job is tried again after STALE (``due_jobs``), the
    error shown meanwhile; after TRIES runs it is failed."""
    job.error = f"try {job.tries} of {TRIES} failed with an unexpected error: {error}"[:2000]
    if job.tries >= TRIES:
        return _give_up(session, job)
    job.state, job.updated_at = "queued", clock.read(session)  # as if its worker were lost: handed out again after STALE
    session.commit()
    return job


def _give_up(session: Session, job: ImportJob) -> ImportJob:
    last = job.error.split(": ", 1)[1] if job.error.startswith("try ") else ""
    why = f"the last one failed with an unexpected error: {last}" if last else \
        "each time its worker stopped before it finished (the workers' log says why)"
    return _fail(session, job, f"gave up after {job.tries} tries: {why}. Nothing after the last "
                               "committed chunk was imported; upload the file again (rows already "
                               "imported count as unchanged), and if it fails again, tell your operator")


def _fail(session: Session, job: ImportJob, error: str) -> ImportJob:
    job.state, job.error, job.data = "failed", error, None
    job.finished_at = job.updated_at = clock.read(session)
    session.commit()
    return job


def mapped_text(job: ImportJob) -> str:
    """The upload with its first line replaced by the mapped column names (ignored columns
    unnamed, which the importer skips), so every row keeps its line number."""
    text = job.data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    header_lines = reader.line_num
    lines = io.StringIO(text, newline="").readlines()
    names = {"email": "email", "name": "name", "lists": "lists", "ignore": ""}
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [names.get(c.target, c.field) for c in mapping_of(job)])
    out.write("\n" * (header_lines - 1))
    out.writelines(lines[header_lines:])
    return out.getvalue()


def problems_csv(job: ImportJob) -> str:
    """The rejected rows and warnings as CSV (line, column, severity, problem, what to do), formulas as text."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(PROBLEM_COLUMNS)
    writer.writerows(job.problems or [])
    return out.getvalue()


def recent_jobs(session: Session, publication_ids: list[int], limit: int = 10) -> list[ImportJob]:
    return list(session.scalars(select(ImportJob).where(ImportJob.publication_id.in_(publication_ids))
                                .order_by(ImportJob.id.desc()).limit(limit)))


def job_dict(job: ImportJob) -> dict:
    """What the progress endpoint answers."""
    return {"id": job.id, "state": job.state, "rows_done": job.rows_done, "rows_total": job.rows_total,
            "added": job.added, "updated": job.updated, "unchanged": job.unchanged, "rejected": job.rejected,
            "not_resubscribed": job.not_resubscribed, "error": job.error}

