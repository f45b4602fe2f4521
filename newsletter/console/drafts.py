"""Drafts: issues written in the console, kept as their section files in the database.

A deployment runs several web processes, maybe on several hosts, so a draft
lives in the database: one row per file (``issue.yaml``, each section file,
each image), each with a version. A save names the version it started from
and is refused when someone saved the file since (``Conflict``), so two people
never silently overwrite each other. ``materialise`` lays a draft out as the
folder the CLI knows (with its publication's files above it) for the checks,
the preview, the build and the download.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import date
from pathlib import Path

import yaml
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from newsletter.authoring.content import MANIFEST_FILE, PUBLICATION_FILE, load_publication
from newsletter.authoring.fields import SLUG
from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.models import Draft, DraftFile, PublicationFile, PublicationRow, Send, utcnow

STARTED = ("sending", "paused", "finished")

LOGO_FIELD = "logo"


class Conflict(InputError):
    """Someone saved the file since the editor opened it; nothing was written."""

    def __init__(self, name: str, by: str, at, theirs: str, yours: str):
        self.name, self.by, self.at, self.theirs, self.yours = name, by, at, theirs, yours
        super().__init__(Problem(name, f"{by or 'someone'} saved it at {at:%H:%M:%S} UTC, after you opened it",
                                 "your text is kept below: compare it with theirs, then save again"))

    @property
    def changes(self) -> str:
        """What they changed, as a unified diff from your text to theirs."""
        return "".join(difflib.unified_diff(self.yours.splitlines(keepends=True), self.theirs.splitlines(keepends=True),
                                            "your text", "saved text", n=1))


# --- the publication's own files ----------------------------------------------------------


def store_publication_files(session: Session, row: PublicationRow, folder: Path) -> list[str]:
    """Keep publication.yaml, its logos (light and dark) and its templates/ folder, so any web process can use them."""
    folder = Path(folder)
    names = [PUBLICATION_FILE]
    publication = load_publication(folder / PUBLICATION_FILE)
    for field, picture in (("logo", publication.logo), ("logo_dark", publication.logo_dark)):
        if picture is None:
            continue
        logo = Path(os.path.relpath(Path(picture).resolve(), folder.resolve())).as_posix()
        if logo.startswith("../"):
            raise InputError(Problem(f"{folder / PUBLICATION_FILE}: field {field}", "the logo is outside the publication's folder",
                                     "put the logo in the publication's folder"))
        if logo not in names:
            names.append(logo)
    templates = folder / "templates"
    if templates.is_dir():
        names += sorted(p.relative_to(folder).as_posix() for p in templates.rglob("*") if p.is_file())
    session.execute(delete(PublicationFile).where(PublicationFile.publication_id == row.id))
    for name in names:
        session.add(PublicationFile(publication_id=row.id, name=name, data=(folder / name).read_bytes()))
    session.flush()
    return names


def publication_files(session: Session, publication_id: int) -> dict[str, bytes]:
    rows = session.scalars(select(PublicationFile).where(PublicationFile.publication_id == publication_id))
    files = {row.name: row.data for row in rows}
    if PUBLICATION_FILE not in files:
        slug = session.get(PublicationRow, publication_id).slug
        raise InputError(Problem(f"publication {slug}", "the console has no copy of its publication.yaml",
                                 "run `newsletter publications add FOLDER` once with the publication's folder"))
    return files


# --- drafts ---------------------------------------------------------------------------------


def get_draft(session: Session, draft_id: int, *, lock: bool = False) -> Draft:
    query = select(Draft).where(Draft.id == draft_id)
    if lock:
        query = query.with_for_update()
    draft = session.scalars(query).one_or_none()
    if draft is None:
        raise NotFound(f"there is no issue {draft_id} in the console")
    return draft


def files_of(session: Session, draft_id: int) -> dict[str, DraftFile]:
    rows = session.scalars(select(DraftFile).where(DraftFile.draft_id == draft_id).order_by(DraftFile.name))
    return {row.name: row for row in rows}


def file_of(session: Session, draft_id: int, name: str) -> DraftFile:
    row = session.scalars(select(DraftFile).where(DraftFile.draft_id == draft_id, DraftFile.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"this issue has no file {name}")
    return row


def checked_slug(slug: str, where: str = "slug") -> str:
    slug = slug.strip()
    if not SLUG.match(slug):
        raise InputError(Problem(where, f"{slug!r} cannot be used in web addresses",
                                 "use lower-case letters, digits and hyphens, like 2021-10"))
    return slug


def create_draft(session: Session, publication_id: int, slug: str, files: dict[str, bytes], actor: str) -> Draft:
    """A new draft holding ``files`` (issue.yaml and what it lists); refuses a slug in use."""
    slug = checked_slug(slug)
    taken = session.scalar(select(Draft.id).where(Draft.publication_id == publication_id, Draft.slug == slug))
    if taken is not None:
        raise InputError(Problem("slug", f"there is an issue {slug!r} already",
                                 "give this one another slug, or open the existing one"))
    if MANIFEST_FILE not in files:
        raise InputError(Problem(MANIFEST_FILE, "the issue has no issue.yaml", "add one: it lists the sections"))
    draft = Draft(publication_id=publication_id, slug=slug, title=manifest_title(files[MANIFEST_FILE]),
                  created_by=actor, editors=[actor])
    session.add(draft)
    session.flush()
    for name, data in files.items():
        session.add(DraftFile(draft_id=draft.id, name=name, data=data, updated_by=actor))
    session.flush()
    return draft


def manifest_title(data: bytes) -> str:
    try:
        values = yaml.safe_load(data.decode("utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return ""
    return str(values.get("title", ""))[:300] if isinstance(values, dict) else ""


BLANK_MANIFEST = """title: {title}
subject: {title}
preheader: ""
date: {day}
sections:
  - 01-letter.md
"""
BLANK_LETTER = """---
kind: letter
title: A word from the editor
author: Your name
---
Write the letter here.
"""


def blank_files(title: str, day: date) -> dict[str, bytes]:
    manifest = BLANK_MANIFEST.format(title=yaml.safe_dump(title, default_style='"').strip(), day=day.isoformat())
    return {MANIFEST_FILE: manifest.encode(), "01-letter.md": BLANK_LETTER.encode()}


def copy_files(session: Session, source: Draft, day: date) -> dict[str, bytes]:
    """The files of another draft, dated ``day``: the usual start of next month's issue."""
    files = {name: row.data for name, row in files_of(session, source.id).items()}
    manifest = files[MANIFEST_FILE].decode("utf-8-sig")
    manifest = re.sub(r"(?m)^date:.*$", f"date: {day.isoformat()}", manifest)
    files[MANIFEST_FILE] = manifest.encode()
    return files


def last_draft(session: Session, publication_id: int) -> Draft | None:
    return session.scalars(select(Draft).where(Draft.publication_id == publication_id)
                           .order_by(Draft.created_at.desc(), Draft.id.desc()).limit(1)).first()


def save_file(session: Session, draft: Draft, name: str, data: bytes, base_version: int | None, actor: str) -> DraftFile:
    """Write one file of a draft. ``base_version`` is the version the editor opened
    (None for a new file); a save on top of someone else's raises Conflict and writes nothing."""
    ensure_editable(session, draft)
    now = utcnow()
    if base_version is None:
        if session.scalar(select(DraftFile.id).where(DraftFile.draft_id == draft.id, DraftFile.name == name)):
            raise InputError(Problem(name, "there is a file of that name already", "choose another name"))
        row = DraftFile(draft_id=draft.id, name=name, data=data, updated_by=actor, updated_at=now)
        session.add(row)
    else:
        # The version check is the UPDATE itself: two processes cannot both win it.
        won = session.execute(
            update(DraftFile).where(DraftFile.draft_id == draft.id, DraftFile.name == name,
                                    DraftFile.version == base_version)
            .values(data=data, version=DraftFile.version + 1, updated_by=actor, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        row = file_of(session, draft.id, name)
        session.refresh(row)
        if won != 1:
            raise Conflict(name, row.updated_by, row.updated_at, decoded(row.data), decoded(data))
    mark_edited(draft, actor)
    session.flush()
    return row


def remove_file(session: Session, draft: Draft, name: str, actor: str) -> None:
    ensure_editable(session, draft)
    session.execute(delete(DraftFile).where(DraftFile.draft_id == draft.id, DraftFile.name == name))
    mark_edited(draft, actor)


def decoded(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace")


def ensure_editable(session: Session, draft: Draft) -> None:
    states = set(session.scalars(select(Send.state).where(Send.issue_id == draft.issue_id))) \
        if draft.issue_id is not None else set()
    if states & set(STARTED) or (draft.state == "scheduled" and "scheduled" not in states):
        raise InputError(Problem(f"issue {draft.slug}", "it is being sent or was sent, so it is frozen",
                                 "corrections go into a new issue: copy this one"))
    if draft.state == "scheduled":
        raise InputError(Problem(f"issue {draft.slug}", "it is scheduled",
                                 "unschedule it first; it then needs approving again"))


def mark_edited(draft: Draft, actor: str) -> None:
    """A save: a new version, the editor remembered, and any approval undone."""
    draft.version += 1
    draft.updated_at = utcnow()
    if actor not in (draft.editors or []):
        draft.editors = [*(draft.editors or []), actor]
    if draft.state in ("awaiting approval", "approved"):
        draft.state = "draft"  # the approval was for other text
        draft.approved_by = ""


def materialise(session: Session, draft: Draft, root: Path) -> Path:
    """Write ``root/<publication>/publication.yaml ...`` and ``.../issues/<slug>/``; return the issue folder."""
    publication = session.get(PublicationRow, draft.publication_id)
    base = Path(root) / publication.slug
    for name, data in publication_files(session, draft.publication_id).items():
        _write(base, name, data)
    folder = base / "issues" / draft.slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, row in files_of(session, draft.id).items():
        _write(folder, name, row.data)
    return folder


def _write(base: Path, name: str, data: bytes) -> None:
    path = base / name
    if not path.resolve().is_relative_to(base.resolve()):
        raise InputError(Problem(name, "the file name leads outside its folder", "use a plain file name"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
