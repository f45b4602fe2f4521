"""The issue list, creating an issue (blank, a copy, a .zip), and editing it:
the manifest, each section in a form that fits its kind, sections added,
removed and reordered, pictures uploaded, and the .zip download."""

from __future__ import annotations

from datetime import date
from pathlib import PurePosixPath

from flask import Response, abort, g, request, url_for
from sqlalchemy import select

from newsletter.accounts import audit
from newsletter.console import bundles, drafts, pictures, sections, workflow
from newsletter.console.images import check_image
from newsletter.authoring.content import MANIFEST_FILE
from newsletter.errors import InputError, NotFound
from newsletter.authoring.issue import SECTION_KINDS
from newsletter.store.models import Draft, PublicationRow
from newsletter.web.console import actor, blueprint, done, message, page, problem_text, require, roles_in, visible_publications
from newsletter.web.pages import database, settings
from newsletter.wording import counted


@blueprint.get("/")
def issue_list():
    state, publication_slug = request.args.get("state", ""), request.args.get("publication", "")
    with database() as db:
        publications = visible_publications(db)
        by_id = {p.id: p for p in publications}
        query = select(Draft).where(Draft.publication_id.in_(by_id)).order_by(Draft.updated_at.desc(), Draft.id.desc())
        rows = []
        for draft in db.scalars(query):
            shown = workflow.display_state(db, draft)
            if (state and shown != state) or (publication_slug and by_id[draft.publication_id].slug != publication_slug):
                continue
            rows.append((draft, shown, by_id[draft.publication_id]))
        single = publications[0] if len(publications) == 1 else None
        return page("console/issues.html", rows=rows, states=workflow.STATES, state=state, publications=publications,
                    publication_slug=publication_slug, publication=single)


# --- a new issue --------------------------------------------------------------------------------


@blueprint.get("/new")
def new_issue_form():
    with database() as db:
        publications = [p for p in visible_publications(db) if "editor" in roles_in(db, p.id)]
        if not publications:
            abort(403, "Making an issue needs the editor role.")
        return page("console/new.html", publications=publications, today=date.today().isoformat(), problems=[],
                    publication=publications[0] if len(publications) == 1 else None)


@blueprint.post("/new")
def new_issue():
    how = request.form.get("how", "blank")
    slug = request.form.get("slug", "").strip()
    try:
        with database() as db:
            publication = db.get(PublicationRow, int(request.form.get("publication", "0") or 0))
            if publication is None:
                raise InputError("choose a publication", "publication", "pick one from the list")
            require(db, publication.id, "editor")
            skipped = []
            if how == "zip":
                upload = request.files.get("zip")
                if upload is None or not upload.filename:
                    raise InputError("no file was chosen", "zip", "choose the issue's .zip file")
                result = bundles.read_issue_zip(upload.read(), upload.filename)
                files, skipped = result.files, result.skipped
                slug = slug or _slug_from(files, upload.filename)
            elif how == "copy":
                last = drafts.last_draft(db, publication.id)
                if last is None:
                    raise InputError("this publication has no issue to copy yet", "how", "start a blank issue")
                files = drafts.copy_files(db, last, date.today())
            else:
                files = drafts.blank_files(request.form.get("title", "").strip() or "New issue", date.today())
            draft = drafts.create_draft(db, publication.id, slug, files, g.operator.email)
            workflow.check(db, settings(), draft)
            workflow.log(db, actor(), draft, "created", {"zip": "from an uploaded .zip", "copy": "as a copy of the last issue"}
                         .get(how, "blank") + (f"; left out: {', '.join(skipped)}" if skipped else ""))
            draft_id = draft.id
    except (InputError, NotFound) as exc:
        with database() as db:
            publications = [p for p in visible_publications(db) if "editor" in roles_in(db, p.id)]
            return page("console/new.html", 400, publications=publications, today=date.today().isoformat(),
                        problems=problem_text(exc), publication=publications[0] if len(publications) == 1 else None)
    note = f" Left out (not section files or pictures): {', '.join(skipped)}." if skipped else ""
    return done(f"Issue {slug} created.{note}", url_for("console.issue_page", draft_id=draft_id))


def _slug_from(files: dict[str, bytes], filename: str) -> str:
    declared = sections.read_manifest(files[MANIFEST_FILE]).get("slug")
    return str(declared) if declared else PurePosixPath(filename).stem.lower()


# --- the issue page -----------------------------------------------------------------------------


def load(db, draft_id: int, role: str | None = None) -> tuple[Draft, PublicationRow, set[str]]:
    try:
        draft = drafts.get_draft(db, draft_id)
    except NotFound:
        abort(404)
    roles = require(db, draft.publication_id, role)
    return draft, db.get(PublicationRow, draft.publication_id), roles


@blueprint.get("/issues/<int:draft_id>")
def issue_page(draft_id: int):
    view = request.args.get("images", "on"), request.args.get("scheme", "light")
    with database() as db:
        draft, publication, roles = load(db, draft_id)
        files = drafts.files_of(db, draft.id)
        manifest_row = files.get(MANIFEST_FILE)
        try:
            manifest = sections.read_manifest(manifest_row.data)
        except InputError as exc:
            manifest = {}
            manifest_problem = problem_text(exc)
        else:
            manifest_problem = []
        listed = []
        for name in sections.section_names(manifest):
            row = files.get(name)
            kind, title = "", ""
            if row is not None:
                try:
                    form = sections.read_section(row.data, name)
                    kind, title = form.kind, form.value("title")
                except InputError:
                    kind = "unreadable"
            listed.append((name, kind, title, row is not None))
        images = [name for name in files if PurePosixPath(name).suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")]
        state = workflow.display_state(db, draft)
        return page("console/issue.html", publication=publication, draft=draft, state=state, roles=roles,
                    manifest=manifest, manifest_version=manifest_row.version if manifest_row else 0,
                    manifest_problem=manifest_problem, listed=listed, images=images, kinds=SECTION_KINDS,
                    findings=workflow.stored_findings(draft), entries=audit.entries_for_draft(db, draft.id),
                    sends=workflow.scheduled_sends(db, draft), images_on=view[0] != "off", dark=view[1] == "dark",
                    audiences=workflow.audience_sizes(db, draft.publication_id),
                    may_approve_own=workflow.may_approve_own(publication), manifest_fields=sections.MANIFEST_FORM_FIELDS)


def _edit(draft_id: int, change) -> Response:
    """Run ``change(db, draft)`` as an edit by an editor, re-check the draft, and go back to its page."""
    try:
        with database() as db:
            draft, _publication, _roles = load(db, draft_id, "editor")
            text = change(db, draft)
            findings = workflow.check(db, settings(), draft)
    except drafts.Conflict:
        raise
    except (InputError, NotFound) as exc:
        return message("Nothing was changed", *problem_text(exc), status=409,
                       back=url_for("console.issue_page", draft_id=draft_id))
    errors = sum(f.is_error for f in findings)
    return done(f"{text} The checks found {counted(errors, 'error')} and {counted(len(findings) - errors, 'warning')}.",
                url_for("console.issue_page", draft_id=draft_id))


@blueprint.post("/issues/<int:draft_id>/manifest")
def save_manifest(draft_id: int):
    def change(db, draft):
        row = drafts.file_of(db, draft.id, MANIFEST_FILE)
        values = sections.manifest_from_form(sections.read_manifest(row.data), request.form)
        drafts.save_file(db, draft, MANIFEST_FILE, sections.write_manifest(values), _version(), g.operator.email)
        draft.title = str(values.get("title", ""))[:300]
        workflow.log(db, actor(), draft, "edited", MANIFEST_FILE)
        return "The issue's details are saved."
    try:
        return _edit(draft_id, change)
    except drafts.Conflict as conflict:
        return _conflict_page(draft_id, conflict)


def _version() -> int:
    try:
        return int(request.form.get("version", ""))
    except ValueError:
        abort(400)


def _conflict_page(draft_id: int, conflict: drafts.Conflict):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        return page("console/conflict.html", 409, publication=publication, draft=draft, conflict=conflict)


# --- sections -----------------------------------------------------------------------------------


@blueprint.get("/issues/<int:draft_id>/sections/<name>")
def section_form(draft_id: int, name: str):
    with database() as db:
        draft, publication, roles = load(db, draft_id)
        row = _file(db, draft, name)
        try:
            form = sections.read_section(row.data, name)
        except InputError as exc:
            return message("This section cannot be shown as a form", *problem_text(exc), status=422,
                           back=url_for("console.issue_page", draft_id=draft_id))
        findings = [f for f in workflow.stored_findings(draft) if f.file == name]
        return page("console/section.html", publication=publication, draft=draft, name=name, form=form,
                    version=row.version, findings=findings, roles=roles, conflict=None, spec=sections)


@blueprint.post("/issues/<int:draft_id>/sections/<name>")
def save_section(draft_id: int, name: str):
    adding_row = any(k.endswith("-add") or k.endswith("-remove") for k in request.form)
    try:
        with database() as db:
            draft, publication, roles = load(db, draft_id, "editor")
            row = _file(db, draft, name)
            original = sections.read_section(row.data, name)
            posted = pictures.with_picks(db, draft, request.form, g.operator.email)  # picked from the library
            edited = sections.section_from_form(original, posted)
            drafts.save_file(db, draft, name, sections.write_section(edited), _version(), g.operator.email)
            workflow.log(db, actor(), draft, "edited", name)
            findings = workflow.check(db, settings(), draft)
    except drafts.Conflict as conflict:
        with database() as db:
            draft, publication, roles = load(db, draft_id)
            row = _file(db, draft, name)
            mine = sections.section_from_form(sections.read_section(row.data, name), request.form)
            return page("console/section.html", 409, publication=publication, draft=draft, name=name, form=mine,
                        version=row.version, findings=[], roles=roles, conflict=conflict, spec=sections)
    except InputError as exc:
        return message("Nothing was changed", *problem_text(exc), status=409,
                       back=url_for("console.issue_page", draft_id=draft_id))
    errors = sum(f.is_error for f in findings if f.file == name)
    target = url_for("console.section_form", draft_id=draft_id, name=name)
    if adding_row:
        return done("Saved.", target)
    return done(f"{name} is saved. The checks found {counted(errors, 'error')} in it.", target)


def _file(db, draft: Draft, name: str):
    try:
        return drafts.file_of(db, draft.id, name)
    except NotFound:
        abort(404)


@blueprint.post("/issues/<int:draft_id>/sections")
def add_section(draft_id: int):
    kind, title = request.form.get("kind", "text"), request.form.get("title", "").strip()

    def change(db, draft):
        manifest_row = drafts.file_of(db, draft.id, MANIFEST_FILE)
        manifest = sections.read_manifest(manifest_row.data)
        names = sections.section_names(manifest)
        existing = drafts.files_of(db, draft.id)
        number = len(names) + 1
        name = f"{number:02d}-{kind}.md"
        while name in existing:
            number += 1
            name = f"{number:02d}-{kind}.md"
        drafts.save_file(db, draft, name, sections.new_section(kind, title), None, g.operator.email)
        manifest["sections"] = names + [name]
        drafts.save_file(db, draft, MANIFEST_FILE, sections.write_manifest(manifest), _version(), g.operator.email)
        workflow.log(db, actor(), draft, "added a section", name)
        return f"Section {name} is added at the end."
    return _manifest_change(draft_id, change)


@blueprint.post("/issues/<int:draft_id>/sections/<name>/<move>")
def move_section(draft_id: int, name: str, move: str):
    if move not in ("up", "down", "remove"):
        abort(404)

    def change(db, draft):
        manifest = sections.read_manifest(drafts.file_of(db, draft.id, MANIFEST_FILE).data)
        names = sections.section_names(manifest)
        if name not in names:
            raise InputError(f"{name} is not one of the sections", name, "reload the page")
        i = names.index(name)
        if move == "remove":
            names.pop(i)
            drafts.remove_file(db, draft, name, g.operator.email)
        else:
            j = max(0, min(len(names) - 1, i - 1 if move == "up" else i + 1))
            names[i], names[j] = names[j], names[i]
        manifest["sections"] = names
        drafts.save_file(db, draft, MANIFEST_FILE, sections.write_manifest(manifest), _version(), g.operator.email)
        workflow.log(db, actor(), draft, {"remove": "removed a section"}.get(move, f"moved a section {move}"), name)
        return f"{name} is removed." if move == "remove" else f"{name} is moved {move}."
    return _manifest_change(draft_id, change)


def _manifest_change(draft_id: int, change):
    try:
        return _edit(draft_id, change)
    except drafts.Conflict as conflict:
        return _conflict_page(draft_id, conflict)


# --- pictures and files ----------------------------------------------------------------------------


@blueprint.post("/issues/<int:draft_id>/images")
def upload_image(draft_id: int):
    upload = request.files.get("image")

    def change(db, draft):
        if upload is None or not upload.filename:
            raise InputError("no file was chosen", "image", "choose a picture")
        name = PurePosixPath(upload.filename.replace("\\", "/")).name
        data = upload.read()
        picture = check_image(name, data)
        existing = drafts.files_of(db, draft.id).get(name)
        drafts.save_file(db, draft, name, data, existing.version if existing else None, g.operator.email)
        workflow.log(db, actor(), draft, "uploaded a picture", f"{name} ({picture.width} x {picture.height})")
        return (f"{name} ({picture.width} x {picture.height} pixels) is stored. Use it with "
                f"src: {name} in a section.")
    return _manifest_change(draft_id, change)


@blueprint.get("/issues/<int:draft_id>/download.zip")
def download(draft_id: int):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        data = bundles.issue_zip(publication.slug, drafts.publication_files(db, publication.id), draft.slug,
                                 {name: row.data for name, row in drafts.files_of(db, draft.id).items()})
    return Response(data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{publication.slug}-{draft.slug}.zip"'})


@blueprint.get("/publications/<slug>/logo")
def logo(slug: str):
    with database() as db:
        publication = db.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).one_or_none()
        if publication is None:
            abort(404)
        require(db, publication.id)
        name = (publication.settings or {}).get("logo") or ""
        files = drafts.publication_files(db, publication.id)
        data = next((d for n, d in files.items() if PurePosixPath(n).name == name), None) if name else None
    if data is None:
        abort(404)
    kind = "image/png" if name.lower().endswith(".png") else "image/jpeg" if name.lower().endswith((".jpg", ".jpeg")) \
        else "image/gif"
    return Response(data, mimetype=kind, headers={"Cache-Control": "private, max-age=300"})
