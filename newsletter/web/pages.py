"""What the subscriber-facing blueprints share: settings, a session, a page.

Pages are rendered from ``templates/site`` in the publication's colours and
language, so sign-up, confirm and unsubscribe pages look like the web copy.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from typing import Iterator

from flask import current_app, render_template, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, RequestEntityTooLarge

from newsletter.config import Settings
from newsletter.authoring.issue import Colours
from newsletter.audience.signup import ClientLimit
from newsletter.store.db import session_scope
from newsletter.store.models import PublicationRow
from newsletter.web import security

DEFAULT_LANGUAGE = "en"
# The blueprints whose errors get these pages (others, like webhooks, keep theirs).
PAGE_BLUEPRINTS = {"public", "subscription", "archive", None}


def install(state) -> None:
    """Run once when the first of the subscriber-facing blueprints is registered."""
    app = state.app
    if "newsletter.client_limit" in app.extensions:
        return
    security.install(app, app.config["SETTINGS"])
    app.extensions["newsletter.client_limit"] = ClientLimit(app.config["SETTINGS"])
    app.register_error_handler(HTTPException, http_error)


def http_error(error: HTTPException):
    if request.blueprint not in PAGE_BLUEPRINTS:
        return error
    if isinstance(error, NotFound):
        return not_found()
    if isinstance(error, RequestEntityTooLarge):
        return message("That was too much", "The form sent more data than any of our forms needs, so nothing was changed.",
                       "Go back, check what you typed and send it again.", status=413)
    if isinstance(error, BadRequest):
        return message("We could not read that form", "Nothing was changed.",
                       "Go back, reload the page and send the form again.", status=400)
    return error


def settings() -> Settings:
    return current_app.config["SETTINGS"]


@contextmanager
def database() -> Iterator[Session]:
    with session_scope(settings()) as session:
        yield session


def page(template: str, status: int = 200, *, publication: PublicationRow | None = None, **context):
    """A rendered page and its status, dressed in the publication's colours."""
    colours = asdict(Colours())
    if publication is not None:
        colours |= (publication.settings or {}).get("colours") or {}
    html = render_template(
        template,
        publication=publication,
        colours=colours,
        language=publication.language if publication is not None else DEFAULT_LANGUAGE,
        **context,
    )
    return html, status


def message(title: str, *paragraphs: str, status: int = 200, publication: PublicationRow | None = None, **context):
    """A page that says one thing: an outcome, an error, what to do next."""
    return page("message.html", status, publication=publication, title=title, paragraphs=paragraphs, **context)


def not_found(publication: PublicationRow | None = None):
    return message(
        "Page not found",
        "This link is not valid. It may have been copied incompletely from an email, or it is no longer in use.",
        "If you copied it, check that you copied the whole link.",
        status=404, publication=publication,
    )
