"""A publication's subscribers (find, read, act on one) and the suppression list.

Thin: ``newsletter.console.subscribers`` and ``newsletter.console.suppressions``
do the work and write the audit log. Every account with a role in a
publication sees its subscribers and may change their lists; erasing needs an
admin, and so does removing a complaint from the suppression list. Adding to
the suppression list, one address or a file of them, only ever stops mail: any
account with a role in any publication may.
"""

from __future__ import annotations

from flask import abort, g, make_response, redirect, request, url_for
from sqlalchemy import select

from newsletter.audience.suppression_import import IMPORT_REASONS
from newsletter.console import imports
from newsletter.console import subscribers as people
from newsletter.console import suppressions
from newsletter.errors import InputError, NotFound
from newsletter.feedback.events import SUPPRESSION_REASONS
from newsletter.store.models import PublicationRow
from newsletter.web.console import (
    actor, blueprint, done, message, page, problem_lines, problem_text, require, visible_publications)
from newsletter.web.pages import database


def _publication(db, slug: str) -> PublicationRow:
    publication = db.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).first()
    if publication is None:
        abort(404)
    require(db, publication.id)
    return publication


def _int(name: str) -> int | None:
    value = request.values.get(name, "")
    return int(value) if value.isdigit() else None


@blueprint.get("/subscribers")
def subscribers_start():
    with database() as db:
        publications = visible_publications(db)
        if len(publications) == 1:
            return redirect(url_for("console.subscriber_search", slug=publications[0].slug), code=303)
        if not publications:
            abort(403)
        return page("console/subscribers.html", choose=publications, found=None)


@blueprint.get("/publications/<slug>/subscribers")
def subscriber_search(slug: str):
    text = request.args.get("q", "")
    with database() as db:
        publication = _publication(db, slug)
        found = people.search(db, publication.id, text, after=_int("after"))
        return page("console/subscribers.html", publication=publication, found=found, q=text.strip(),
                    after=_int("after"), choose=[])


@blueprint.get("/publications/<slug>/subscribers/<int:subscriber_id>")
def subscriber_page(slug: str, subscriber_id: int):
    with database() as db:
        publication = _publication(db, slug)
        try:
            view = people.subscriber_view(db, publication.id, subscriber_id)
        except NotFound:
            abort(404)
        return page("console/subscriber.html", publication=publication, view=view, labels=people.REASONS)


def _act(slug: str, subscriber_id: int, run):
    """Run ``run(db, publication)`` -> notice text (or text and where to go), then back to the subscriber's page."""
    back = url_for("console.subscriber_page", slug=slug, subscriber_id=subscriber_id)
    try:
        with database() as db:
            publication = _publication(db, slug)
            text = run(db, publication)
            if isinstance(text, tuple):
                text, back = text
    except PermissionError as exc:
        return message("Not for this account", f"{str(exc).capitalize()}.", back=back, status=403)
    except NotFound:
        abort(404)
    except InputError as exc:
        return message("Nothing was changed", *problem_text(exc), back=back, status=400)
    return done(text, back)


def _list_id() -> int:
    list_id = _int("list")
    if list_id is None:
        raise InputError("choose a list", "field list", "pick one from the form")
    return list_id


@blueprint.post("/publications/<slug>/subscribers/<int:subscriber_id>/add-to-list")
def subscriber_add_to_list(slug: str, subscriber_id: int):
    def run(db, publication):
        joined = people.add_to_list(db, actor(), publication.id, subscriber_id, _list_id())
        return f"Added to “{joined.name}”."
    return _act(slug, subscriber_id, run)


@blueprint.post("/publications/<slug>/subscribers/<int:subscriber_id>/remove-from-list")
def subscriber_remove_from_list(slug: str, subscriber_id: int):
    def run(db, publication):
        left, still_here = people.remove_from_list(db, actor(), publication.id, subscriber_id, _list_id())
        if still_here:
            return f"Removed from “{left.name}”."
        return (f"Removed from “{left.name}”. They are on none of {publication.name}’s lists now, "
                "so they are no longer found here.", url_for("console.subscriber_search", slug=slug))
    return _act(slug, subscriber_id, run)


@blueprint.post("/publications/<slug>/subscribers/<int:subscriber_id>/unsubscribe")
def subscriber_unsubscribe(slug: str, subscriber_id: int):
    def run(db, publication):
        left = people.unsubscribe(db, actor(), publication.id, subscriber_id, _int("list"))
        if not left:
            return "They were unsubscribed already: nothing changed."
        return "Unsubscribed from " + ", ".join(f"“{m.name}”" for m in left) + "."
    return _act(slug, subscriber_id, run)


def _admin_only_erasure():
    if not g.operator.is_admin:
        abort(403, "Erasing a subscriber needs an admin account.")


@blueprint.get("/publications/<slug>/subscribers/<int:subscriber_id>/erase")
def subscriber_erase_form(slug: str, subscriber_id: int):
    _admin_only_erasure()
    with database() as db:
        publication = _publication(db, slug)
        try:
            subscriber, report, elsewhere = people.erasure_preview(db, publication.id, subscriber_id)
        except NotFound:
            abort(404)
        return page("console/erase.html", publication=publication, subscriber=subscriber, report=report,
                    elsewhere=elsewhere)


@blueprint.post("/publications/<slug>/subscribers/<int:subscriber_id>/erase")
def subscriber_erase(slug: str, subscriber_id: int):
    _admin_only_erasure()
    try:
        with database() as db:
            publication = _publication(db, slug)
            report = people.erase(db, actor(), publication.id, subscriber_id)
    except NotFound:
        abort(404)
    return done(f"Subscriber {subscriber_id} is erased: {report.memberships_deleted} memberships deleted, "
                f"{report.ledger_rows_anonymised} sent emails and {report.events_anonymised} events anonymised. "
                "Only a fingerprint of the address is kept, so it is never mailed again.",
                url_for("console.subscriber_search", slug=slug))


# --- the suppression list -------------------------------------------------------------------------


def _require_some_role(db) -> None:
    if not visible_publications(db):
        abort(403, "The suppression list is for accounts with a role in a publication.")


SHOWN_PROBLEMS = 50  # rejected rows listed after an import; the next show once they are corrected


def _suppressions_page(db, status: int = 200, problems=(), email: str = "", reason: str = "", *, imported=None,
                       import_problems=(), import_reason: str = "manual"):
    """The list and its forms; ``problems`` of the add form, ``import_problems`` of a file that
    could not be read, ``imported`` the report of one that was."""
    text, shown_reason = request.args.get("q", ""), request.args.get("reason", "")
    try:
        found = suppressions.search(db, text, shown_reason, before=_int("before"))
    except InputError as exc:
        found, problems = suppressions.search(db, text), [*problems, *problem_text(exc)]
        shown_reason = ""
    why_not = {row.id: suppressions.why_not_removable(row, actor()) for row in found.rows}
    return page("console/suppressions.html", status, found=found, q=text.strip(), reason=shown_reason,
                before=_int("before"), reasons=SUPPRESSION_REASONS, labels=people.REASONS, why_not=why_not,
                problems=list(problems), email=email, new_reason=reason, import_reasons=IMPORT_REASONS,
                import_reason=import_reason, import_problems=list(import_problems), imported=imported,
                rejected=problem_lines(imported.problems[:SHOWN_PROBLEMS]) if imported else [],
                max_mb=imports.MAX_BYTES // 1024 // 1024)


@blueprint.get("/suppressions")
def suppression_list():
    with database() as db:
        _require_some_role(db)
        return _suppressions_page(db)


@blueprint.post("/suppressions")
def suppression_add():
    email, reason = request.form.get("email", ""), request.form.get("reason", "")
    try:
        with database() as db:
            _require_some_role(db)
            key, added = suppressions.add(db, actor(), email, reason)
    except InputError as exc:
        with database() as db:
            return _suppressions_page(db, 400, problem_text(exc), email, reason)
    text = f"{key} is on the suppression list: it will not be mailed again." if added else \
        f"{key} was on the suppression list already: nothing changed."
    return done(text, url_for("console.suppression_list"))


@blueprint.post("/suppressions/import")
def suppression_import():
    """Another provider's suppression list, uploaded as CSV: the page then says what it did."""
    upload, reason = request.files.get("file"), request.form.get("reason", "manual")
    try:
        with database() as db:
            _require_some_role(db)
            if upload is None or not upload.filename:
                raise InputError("no file was chosen", "file", "choose the CSV file to import")
            report = suppressions.import_file(db, actor(), upload.read(), upload.filename, reason)
    except InputError as exc:
        with database() as db:
            return _suppressions_page(db, 400, import_problems=problem_text(exc), import_reason=reason)
    with database() as db:
        return _suppressions_page(db, imported=report, import_reason=reason)


def _removable(db, suppression_id: int):
    _require_some_role(db)
    try:
        row = suppressions.get(db, suppression_id)
    except NotFound:
        abort(404)
    why_not = suppressions.why_not_removable(row, actor())
    if why_not and not suppressions.is_erased_entry(row):
        abort(403, why_not)
    if why_not:
        abort(make_response(message("It stays on the list", why_not, back=url_for("console.suppression_list"),
                                    status=409)))
    return row


@blueprint.get("/suppressions/<int:suppression_id>/remove")
def suppression_remove_form(suppression_id: int):
    with database() as db:
        row = _removable(db, suppression_id)
        return page("console/unsuppress.html", row=row, labels=people.REASONS, problems=[], reason="")


@blueprint.post("/suppressions/<int:suppression_id>/remove")
def suppression_remove(suppression_id: int):
    reason = request.form.get("reason", "")
    try:
        with database() as db:
            _removable(db, suppression_id)
            row = suppressions.remove(db, actor(), suppression_id, reason)
            email = row.email
    except InputError as exc:
        with database() as db:
            row = _removable(db, suppression_id)
            return page("console/unsuppress.html", 400, row=row, labels=people.REASONS, problems=problem_text(exc),
                        reason=reason)
    return done(f"{email} is off the suppression list: it may be mailed again if it is on a list.",
                url_for("console.suppression_list"))
