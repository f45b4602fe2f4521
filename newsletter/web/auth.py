"""One login for the comms console and the ops dashboard: /console/login.

The session cookie (Flask's, signed, HttpOnly, SameSite=Lax, Secure behind
https) carries only a random token; ``newsletter.accounts.websessions`` keeps the
session on the server, so logging out, a new password and a revoked account
end it at once on every web process.

Failed logins are limited per client address (a hard limit) and per account
(``login_limit.LoginLimit``); a login that succeeds clears its account's
count. An account that met its limit still lets its owner in from an address
they have logged in from before, so guessers cannot lock them out.

The console and the dashboard both send people here (``login_url``), and
both record ``install`` on their blueprints: the pages' security headers,
the session's lifetime and the login limit are set up once, here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, get_flashed_messages, redirect, render_template, request, session, url_for

from newsletter.authoring.issue import Colours
from newsletter.accounts import admins, audit, login_limit, websessions
from newsletter.web import security
from newsletter.web.pages import database, settings

log = logging.getLogger(__name__)

blueprint = Blueprint("auth", __name__)

SESSION_KEY = "account"
# Where a login may lead back to: pages of the console and of the dashboard, never another site.
NEXT_PREFIXES = ("/console/", "/ops/")

LIMITED = "Too many failed attempts to log in. Wait a few minutes, then try again."
WRONG = "The email address or the password is not right."
EXPIRED = "The form had expired. Please log in again."


def install(state) -> None:
    """Once per app, whichever blueprint that needs a login is registered first."""
    from newsletter.web.pages import install as install_pages

    app = state.app
    if "newsletter.login_limit" in app.extensions:
        return
    install_pages(state)  # security headers, CSRF tokens in templates
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=app.config["SETTINGS"].ops_session_seconds)
    app.extensions["newsletter.login_limit"] = login_limit.LoginLimit(app.config["SETTINGS"])


blueprint.record_once(install)


def login_url(target: str | None = None) -> str:
    return url_for("auth.login_form", next=safe_next(target))


def safe_next(target: str | None) -> str:
    """Back to the console or dashboard page asked for, never to another site."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith(NEXT_PREFIXES):
        return url_for("console.issue_list")
    return target


# --- the pages -----------------------------------------------------------------------


@blueprint.get("/login")
def login_form():
    return _login_page(next=safe_next(request.args.get("next")), email="", problem="")


@blueprint.post("/login")
def login():
    email, password = request.form.get("email", ""), request.form.get("password", "")
    target = safe_next(request.form.get("next"))
    if security.csrf_problem():
        return _login_page(400, next=target, email=email, problem=EXPIRED)
    account, problem, status = log_in(email, password, _place(target))
    if account is None:
        return _login_page(status, next=target, email=email, problem=problem)
    return redirect(target, code=303)


@blueprint.post("/logout")
def logout():
    if security.csrf_problem():
        return _login_page(400, next=url_for("console.issue_list"), email="",
                           problem="You are still logged in: the form had expired. Reload the page and try again.")
    log_out()
    flash("You are logged out.")
    return redirect(url_for("auth.login_form"), code=303)


def _login_page(status: int = 200, **context):
    html = render_template("console/login.html", operator=None, publication=None, may_operate=False,
                           colours=asdict(Colours()), notices=get_flashed_messages(with_categories=True), **context)
    return html, status


def _place(target: str) -> str:
    """What the audit log says was logged in to."""
    return "ops dashboard" if urlsplit(target).path.startswith("/ops/") else "console"


# --- who is logged in --------------------------------------------------------------------


def client_address() -> str:
    return request.remote_addr or "unknown"


def current_account() -> admins.Operator | None:
    """Who this request comes from, looked up on the server on every request (cached per request)."""
    if "account" in g:
        return g.account
    token = session.get(SESSION_KEY)
    account = None
    if isinstance(token, str):
        with database() as db:
            row = websessions.account_of(db, token)
            account = admins.operator_of(row) if row is not None else None
    g.account = account
    return account


def log_in(email: str, password: str, where: str) -> tuple[admins.Operator | None, str, int]:
    """(account, problem, status): the account when the password is right and no limit is met."""
    client = client_address()
    limit: login_limit.LoginLimit = current_app.extensions["newsletter.login_limit"]
    limited = limit.check(client, email)
    key = login_limit.client_key(client, settings().signing_keys[-1])
    with database() as db:
        if limited == limit.CLIENT or (limited == limit.ACCOUNT and not login_limit.is_known_client(db, email, key)):
            log.warning("login refused: too many failed attempts (%s limit, client %s)", limited, client)
            return None, LIMITED, 429
        account = admins.authenticate(db, email, password)
        if account is None:
            limit.failed(client, email)
            log.info("failed login to the %s (client %s)", where, client)
            return None, WRONG, 401
        login_limit.remember_client(db, account.id, key)
        token = websessions.open_session(db, account.id, client, settings().ops_session_seconds)
        audit.record(db, account.email, "logged in", where, client=client)
    limit.succeeded(email)
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = token
    g.account = account
    log.info("%s logged in to the %s", account.email, where)
    return account, "", 303


def log_out(where: str = "console") -> None:
    token = session.get(SESSION_KEY)
    account = current_account()
    with database() as db:
        if isinstance(token, str):
            websessions.end_session(db, token)
        if account is not None:
            audit.record(db, account.email, "logged out", where, client=client_address())
    session.clear()
    g.account = None
