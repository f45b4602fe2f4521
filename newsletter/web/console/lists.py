"""Lists in the browser: make one, rename and describe it, and hand out its
sign-up form (the link, and an HTML snippet to paste into a website)."""

from __future__ import annotations

from flask import abort, request, url_for
from markupsafe import escape
from sqlalchemy import select

from newsletter.audience import subscribers as people
from newsletter.errors import InputError, NotFound
from newsletter.accounts import audit
from newsletter.store.models import MailingList
from newsletter.store.publications import settings_for
from newsletter.web import auth
from newsletter.web.console import blueprint, done, field_errors, page, roles_in
from newsletter.web.console.audience import _publication, _sizes
from newsletter.web.pages import database, settings

FIELDS = {"list slug": "slug", "list name": "name"}


def _record(db, publication, action: str, detail: str) -> None:
    from flask import g

    audit.record(db, g.operator.email, action, detail, client=auth.client_address(), publication_id=publication.id)


@blueprint.get("/lists/new")
def list_new():
    with database() as db:
        publication = _publication(db, request.args.get("publication", ""), "editor")
        return page("console/list_new.html", publication=publication, values={}, errors={})


@blueprint.post("/lists/new")
def list_create():
    values = {k: request.form.get(k, "").strip() for k in ("slug", "name", "description")}
    with database() as db:
        publication = _publication(db, request.form.get("publication", ""), "editor")
        try:
            people.create_list(db, publication.slug, values["slug"], values["name"], values["description"])
            _record(db, publication, "created a list", f"{values['slug']} ({values['name']})")
        except InputError as exc:
            db.rollback()
            return page("console/list_new.html", 400, publication=publication, values=values,
                        errors=field_errors(exc, FIELDS))
    return done(f"The list {values['name']} is made. Its sign-up form is below.",
                url_for("console.list_page", publication=publication.slug, slug=values["slug"]))


def _list(db, publication, slug: str) -> MailingList:
    row = db.scalars(select(MailingList).where(MailingList.publication_id == publication.id,
                                               MailingList.slug == slug)).one_or_none()
    if row is None:
        abort(404)
    return row


def _list_page(db, publication, row, values=None, errors=None, status=200):
    signup_url = f"{settings_for(settings(), publication).base_url.rstrip('/')}/subscribe/{publication.slug}/{row.slug}"
    recipients = next((a.recipients for a in _sizes(db, publication) if a.list_slug == row.slug), 0)
    return page("console/list.html", status, publication=publication, row=row, signup_url=signup_url,
                snippet=signup_snippet(signup_url, row.name), recipients=recipients,
                values=values or {"name": row.name, "description": row.description}, errors=errors or {},
                may_edit="editor" in roles_in(db, publication.id))


@blueprint.get("/lists/<publication>/<slug>")
def list_page(publication: str, slug: str):
    with database() as db:
        found = _publication(db, publication)
        return _list_page(db, found, _list(db, found, slug))


@blueprint.post("/lists/<publication>/<slug>")
def list_save(publication: str, slug: str):
    values = {k: request.form.get(k, "").strip() for k in ("name", "description")}
    with database() as db:
        found = _publication(db, publication, "editor")
        row = _list(db, found, slug)
        before = row.name
        try:
            people.update_list(db, row, values["name"], values["description"])
            _record(db, found, "changed a list", f"{slug}: {before} -> {row.name}" if before != row.name else slug)
        except (InputError, NotFound) as exc:
            db.rollback()
            return _list_page(db, found, _list(db, found, slug), values, field_errors(exc, FIELDS), 400)
    return done("The list's name and description are saved.", url_for("console.list_page", publication=publication,
                                                                        slug=slug))


def signup_snippet(url: str, name: str) -> str:
    """HTML for a website: a form that opens the sign-up page with the address filled in.
    It asks with GET, so the sign-up page (and its own protections) takes the subscription."""
    return (f'<form action="{escape(url)}" method="get">\n'
            f'  <label for="newsletter-email">Your email address, for {escape(name)}</label>\n'
            f'  <input type="email" id="newsletter-email" name="email" autocomplete="email" required>\n'
            f'  <button type="submit">Subscribe</button>\n'
            f'</form>\n')
