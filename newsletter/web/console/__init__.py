"""/console: the comms console. Write, preview, check, proof, approve, schedule, follow.

A thin layer over ``newsletter.console`` (drafts, checks, the approval flow,
results) and ``newsletter.accounts.admins`` (accounts and roles). One login serves
this and the ops dashboard (``newsletter.web.auth``). Every page works
without JavaScript; only the live progress refresh uses a small script of
the app's own, and the preview is shown in frames.

The views live in the modules beside this one; each adds its routes to
``blueprint``.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from flask import Blueprint, Response, abort, flash, g, get_flashed_messages, redirect, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import admins
from newsletter.console.workflow import Actor
from newsletter.authoring.issue import Colours
from newsletter.store.models import PublicationRow
from newsletter.web import auth, security
from newsletter.web.pages import database

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
blueprint = Blueprint("console", __name__, static_folder=str(STATIC), static_url_path="/static")

OPEN_ENDPOINTS = {"console.static", "console.welcome_form", "console.welcome", "console.forgot_form", "console.forgot"}
# Console pages hold the preview frames and the live refresh's script, on top of the site's policy.
EXTRA_POLICY = "; frame-src 'self'; script-src 'self'; connect-src 'self'"
UPLOAD_BYTES = 25 * 1024 * 1024  # a zipped issue with its pictures
IMPORT_BYTES = 10 * 1024 * 1024 + 64 * 1024  # a subscriber CSV (console.imports.MAX_BYTES) and the form around it
# The CSV uploads (each at most console.imports.MAX_BYTES), and the command that takes a larger file.
IMPORT_ENDPOINTS = {"console.import_upload": "newsletter subscribers import",
                    "console.suppression_import": "newsletter suppressions import"}


blueprint.record_once(auth.install)


@blueprint.after_request
def console_policy(response: Response) -> Response:
    if "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = security.content_security_policy(response) + EXTRA_POLICY
    return response


@blueprint.before_request
def require_account():
    if request.endpoint in ("console.new_issue", "console.upload_image", "console.publication_create",
                            "console.publication_save", "console.picture_upload"):
        request.max_content_length = UPLOAD_BYTES  # the app's default is for forms
    if request.endpoint in IMPORT_ENDPOINTS:
        request.max_content_length = IMPORT_BYTES
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    g.operator = auth.current_account()
    if g.operator is None:
        if request.path.endswith(".json"):
            return {"error": "log in first"}, 401
        return redirect(auth.login_url(request.full_path.rstrip("?")))
    with database() as db:  # read now: a page is rendered while the view holds its own session
        g.may_operate = admins.may_operate(db, g.operator)
    if request.method == "POST" and security.csrf_problem():
        return message("Nothing was changed", "The form had expired.", "Go back, reload the page and send it again.",
                       status=400)
    return None


def actor() -> Actor:
    return Actor(g.operator, auth.client_address())


# --- what an account may see ----------------------------------------------------------------


def visible_publications(db: Session) -> list[PublicationRow]:
    """Publications where the account holds any role (all of them for an admin)."""
    rows = list(db.scalars(select(PublicationRow).order_by(PublicationRow.name)))
    if g.operator.is_admin:
        return rows
    held = admins.roles_of(db, g.operator.id)
    return [row for row in rows if row.id in held]


def roles_in(db: Session, publication_id: int) -> set[str]:
    if g.operator.is_admin:
        return {"editor", "approver", "operator", "admin"}
    return admins.roles_of(db, g.operator.id).get(publication_id, set())


def require(db: Session, publication_id: int, role: str | None = None) -> set[str]:
    """The account's roles in the publication; 403 when it has none (or not ``role``)."""
    roles = roles_in(db, publication_id)
    if not roles or (role and role not in roles):
        abort(403, f"this needs the {role} role" if role else "this account has no role in this publication")
    return roles


# --- pages ---------------------------------------------------------------------------------------


def page(template: str, status: int = 200, publication: PublicationRow | None = None, **context):
    colours = asdict(Colours())
    if publication is not None:
        colours |= (publication.settings or {}).get("colours") or {}
    html = render_template(template, operator=g.get("operator"), notices=get_flashed_messages(with_categories=True),
                           publication=publication, colours=colours, may_operate=g.get("may_operate", False), **context)
    return html, status


def message(title: str, *paragraphs: str, status: int = 200, back: str = ""):
    return page("console/message.html", status, title=title, paragraphs=paragraphs, back=back)


def done(text: str, target: str):
    flash(text)
    return redirect(target, code=303)


def field_errors(exc, fields: dict[str, str]) -> dict[str, list[str]]:
    """Each problem under the form field it is about (``fields`` maps a problem's
    ``where`` to a field name); the rest under "form"."""
    found: dict[str, list[str]] = {}
    for problem in getattr(exc, "problems", None) or []:
        text = problem.message + (f" ({problem.fix})" if problem.fix else "")
        found.setdefault(fields.get(problem.where, "form"), []).append(text)
    if not found:
        found["form"] = [str(exc)]
    return found


def problem_text(exc) -> list[str]:
    problems = getattr(exc, "problems", None)
    if problems:
        return problem_lines(problems)
    return [for_people(str(exc))]


def problem_lines(problems) -> list[str]:
    """Each problem as the page shows it: where, what is wrong, and what to do."""
    return [for_people(f"{p.where}: {p.message}" + (f" ({p.fix})" if p.fix else "")) for p in problems]


# The library's problems name the command line's options; the console's forms have labels.
FORM_WORDS = (
    ("--allow-private-links", "the box “Send even though its links are not public”"),
    ("--list / --segment", "lists"),
    ("--at", "date and time"),
    ("--now", "Send now"),
    ("--to", "proof addresses"),
    ("--list", "lists"),
    ("--segment", "segment"),
)
_FLAG = re.compile(r"(?<![\w-])(" + "|".join(re.escape(flag) for flag, _ in FORM_WORDS) + r")(?![\w-])")


def for_people(text: str) -> str:
    """A library's message in the console's words: "date and time", not "--at"."""
    words = dict(FORM_WORDS)
    return _FLAG.sub(lambda match: words[match.group(1)], text)


@blueprint.errorhandler(403)
def forbidden(error):
    return message("Not for this account", getattr(error, "description", "") or "Your roles do not allow this.",
                   "Ask an admin for the role if you need it.", status=403)


@blueprint.errorhandler(404)
def not_found(error):
    return message("Not found", "There is nothing here: the issue or page may have been removed.", status=404)


@blueprint.errorhandler(413)
def too_large(error):
    if request.endpoint in IMPORT_ENDPOINTS:
        return message("That file is too large", f"A CSV file can be at most {IMPORT_BYTES // 1024 // 1024} MB. "
                       "Nothing was stored.", "Split it into smaller files, or import it with "
                       f"`{IMPORT_ENDPOINTS[request.endpoint]}`.", status=413)
    return message("That file is too large", f"Uploads can be at most {UPLOAD_BYTES // 1024 // 1024} MB. "
                   "Nothing was stored.", "Make the pictures smaller, zip the issue again and upload it.", status=413)


def _utc(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _local(moment, zone_name: str) -> str:
    """"Wednesday 01 December 2021 09:00 GMT (2021-12-01 09:00 UTC)": both clocks people ask for."""
    from newsletter.sending.scheduling import when_from_utc

    return when_from_utc(moment, zone_name).describe() if moment else "-"


blueprint.add_app_template_filter(_utc, "console_utc")
blueprint.add_app_template_filter(_local, "console_local")
blueprint.add_app_template_filter(for_people, "for_people")

from newsletter.web.console import (  # noqa: E402,F401 - they add the routes
    accounts, audience, issues, lists, pictures, preview, publications, sending, steps, subscribers)
from newsletter.web.console import clicks  # noqa: E402,F401 - an issue's clicks (docs/clicks.md)
