"""The picture library of a publication: upload a picture once, with its description,
and pick it from thumbnails in any image field of a section (``console.pictures``)."""

from __future__ import annotations

from pathlib import PurePosixPath

from flask import Response, abort, g, request, url_for

from newsletter.console import pictures as library
from newsletter.errors import InputError, NotFound
from newsletter.store.models import Draft
from newsletter.accounts import audit
from newsletter.web import auth
from newsletter.web.console import blueprint, done, field_errors, page, require, roles_in
from newsletter.web.console.audience import _publication
from newsletter.web.pages import database

TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


SECTION_PAGES = ("console.section_form", "console.save_section")


@blueprint.before_request
def load_section_pictures():
    """The library of the section's publication, read before the view opens its own session."""
    if request.endpoint not in SECTION_PAGES or g.get("operator") is None:
        return
    with database() as db:
        draft = db.get(Draft, request.view_args.get("draft_id"))
        rows = library.library(db, draft.publication_id) if draft is not None else []
        db.expunge_all()
    g.section_pictures = rows


@blueprint.app_context_processor
def picture_library():
    """``picture_library(publication_id)``: the thumbnails the section form's picker offers."""
    return {"picture_library": lambda publication_id: [p for p in g.get("section_pictures", [])
                                                       if p.publication_id == publication_id]}


def _back() -> str:
    back = request.values.get("back", "")
    return back if back.startswith("/console/") and "//" not in back else ""


def _library_page(db, publication, values=None, errors=None, status=200):
    return page("console/pictures.html", status, publication=publication, rows=library.library(db, publication.id),
                values=values or {}, errors=errors or {}, back=_back(),
                may_edit="editor" in roles_in(db, publication.id))


@blueprint.get("/pictures")
def pictures():
    with database() as db:
        return _library_page(db, _publication(db, request.args.get("publication", "")))


@blueprint.post("/pictures")
def picture_upload():
    values = {"alt": request.form.get("alt", ""), "decorative": request.form.get("decorative", "")}
    upload = request.files.get("image")
    with database() as db:
        publication = _publication(db, request.form.get("publication", ""), "editor")
        try:
            row = library.add_picture(db, publication.id, upload.filename if upload else "",
                                      upload.read() if upload else b"", values["alt"], bool(values["decorative"]),
                                      g.operator.email)
            audit.record(db, g.operator.email, "added a picture", f"{row.name} ({row.width} x {row.height})",
                         client=auth.client_address(), publication_id=publication.id)
        except InputError as exc:
            db.rollback()
            fields = {p.where: ("alt" if p.where == "alt" else "image") for p in exc.problems}
            return _library_page(db, publication, values, field_errors(exc, fields), 400)
        name, width, height = row.name, row.width, row.height
    text = f"{name} ({width} x {height} pixels) is in the library: pick it in any picture field of a section."
    return done(text, _back() or url_for("console.pictures", publication=publication.slug))


def _picture(db, picture_id: int):
    try:
        row = library.get_picture(db, picture_id)
    except NotFound:
        abort(404)
    require(db, row.publication_id)
    return row


@blueprint.get("/pictures/<int:picture_id>/thumbnail.png")
def picture_thumbnail(picture_id: int):
    with database() as db:
        data = _picture(db, picture_id).thumbnail
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@blueprint.get("/pictures/<int:picture_id>/file")
def picture_file(picture_id: int):
    with database() as db:
        row = _picture(db, picture_id)
        data, kind = row.data, TYPES.get(PurePosixPath(row.name).suffix.lower(), "application/octet-stream")
    return Response(data, mimetype=kind, headers={"Cache-Control": "private, max-age=3600"})


