"""Publications in the browser (admins): add one, and edit its name, sender,
colours, logos, footer, postal address and time zone, with a preview and the
contrast check. Thin over ``newsletter.console.publication_form``, which writes
the publication.yaml the CLI reads and checks it with the CLI's loader."""

from __future__ import annotations

from pathlib import PurePosixPath
from zoneinfo import available_timezones

from flask import Response, abort, g, request, url_for
from sqlalchemy import select

from newsletter.authoring.colours import WCAG_AA
from newsletter.authoring.content import PUBLICATION_FILE
from newsletter.console import drafts
from newsletter.console import publication_form as form_spec
from newsletter.errors import InputError
from newsletter.accounts import audit
from newsletter.sending.lanes import sending_summary
from newsletter.store.models import PublicationRow
from newsletter.web import auth
from newsletter.web.console import blueprint, done, page, require
from newsletter.web.pages import database, settings

ZONES = sorted(available_timezones())
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def _require_admin():
    if not g.operator.is_admin:
        abort(403, "Publications are set up by admins.")


def _row(db, slug: str) -> PublicationRow:
    row = db.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).one_or_none()
    if row is None:
        abort(404)
    return row


@blueprint.get("/publications")
def publications():
    _require_admin()
    with database() as db:
        rows = list(db.scalars(select(PublicationRow).order_by(PublicationRow.name)))
        return page("console/publications.html", rows=rows)


def _form_page(db, row, values, errors=None, status=200, contrast=None, saved_note=""):
    secrets = sending_summary(settings(), row) if row is not None else []
    return page("console/publication.html", status, publication=row, row=row, values=values, errors=errors or {},
                spec=form_spec, zones=ZONES, contrast=contrast, wcag=WCAG_AA, secrets=secrets,
                pairs=form_spec.pairs_spec(), saved_note=saved_note)


@blueprint.get("/publications/new")
def publication_new():
    _require_admin()
    with database() as db:
        values = form_spec.new_values()
        return _form_page(db, None, values, contrast=_contrast_of_defaults())


def _contrast_of_defaults():
    from newsletter.authoring.issue import Publication

    return form_spec.contrast_rows(Publication("new", "", "", "", "", "", ""))


@blueprint.get("/publications/<slug>/edit")
def publication_edit(slug: str):
    _require_admin()
    with database() as db:
        row = _row(db, slug)
        try:
            text = drafts.publication_files(db, row.id)[PUBLICATION_FILE].decode("utf-8-sig")
            values = form_spec.form_values(text)
            checked = form_spec.save(db, row, values, {}, store=False)
        except form_spec.FormProblems as exc:
            return _form_page(db, row, values, exc.errors, 200)
        except InputError as exc:
            abort(409, " ".join(p.message + (f" ({p.fix})" if p.fix else "") for p in exc.problems))
        return _form_page(db, row, values, contrast=form_spec.contrast_rows(checked.publication))


def _posted() -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    uploads = {}
    for name in form_spec.LOGO_FIELDS:
        upload = request.files.get(name)
        if upload is not None and upload.filename:
            uploads[name] = (upload.filename, upload.read())
    return values, uploads


@blueprint.post("/publications/new")
def publication_create():
    _require_admin()
    return _save(None)


@blueprint.post("/publications/<slug>/edit")
def publication_save(slug: str):
    _require_admin()
    return _save(slug)


def _save(slug: str | None):
    values, uploads = _posted()
    checking = request.form.get("action") == "check"
    with database() as db:
        row = _row(db, slug) if slug else None
        if row is not None:
            shown = form_spec.form_values(drafts.publication_files(db, row.id)[PUBLICATION_FILE].decode("utf-8-sig"))
            values = {**{k: v for k, v in shown.items() if k in form_spec.LOGO_FIELDS}, **values}
        try:
            saved = form_spec.save(db, row, values, uploads, store=not checking)
        except form_spec.FormProblems as exc:
            db.rollback()
            if uploads:
                exc.errors.setdefault("form", []).append(
                    "The logo you chose was not kept: choose it again once the rest is right.")
            return _form_page(db, row, values, exc.errors, 400)
        if checking:
            return _form_page(db, row, values, contrast=form_spec.contrast_rows(saved.publication),
                              saved_note="Checked: no problems. Nothing is saved until you save.")
        audit.record(db, g.operator.email, "added a publication" if saved.created else "changed a publication",
                     saved.row.slug, client=auth.client_address(), publication_id=saved.row.id)
        new_slug = saved.row.slug
    text = "The publication is added." if saved.created else "The publication is saved."
    return done(f"{text} Its publication.yaml is in every issue's download.",
                url_for("console.publication_edit", slug=new_slug))


@blueprint.get("/publications/<slug>/logo-dark")
def logo_dark(slug: str):
    with database() as db:
        row = _row(db, slug)
        require(db, row.id)
        name = (row.settings or {}).get("logo_dark") or ""
        files = drafts.publication_files(db, row.id)
        data = next((d for n, d in files.items() if PurePosixPath(n).name == name), None) if name else None
    if data is None:
        abort(404)
    return Response(data, mimetype=IMAGE_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=300"})
