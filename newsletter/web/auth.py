"""One login for the comms console and the ops dashboard.

The session cookie (Flask's, signed, HttpOnly, SameSite=Lax, Secure behind
https) carries only a random token; ``newsletter.ops.websessions`` keeps the
session on the server, so logging out, a new password and a revoked account
end it at once on every web process.

Logging in is limited per client address (a hard limit) and per account: an
account that met its limit still lets its owner in from an address they have
logged in from before, so guessers cannot lock them out.
"""

from __future__ import annotations

import logging

from flask import current_app, g, request, session

from newsletter.ops import admins, audit, websessions
from newsletter.web.pages import database, settings

log = logging.getLogger(__name__)

SESSION_KEY = "account"

LIMITED = "Too many attempts to log in. Wait a few minutes, then try again."
WRONG = "The email address or the password is not right."


def install(app) -> None:
    """Once per app, by the first blueprint that needs a login."""
    if "newsletter.login_limit" not in app.extensions:
        app.extensions["newsletter.login_limit"] = admins.LoginLimit(app.config["SETTINGS"])


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
    limited = current_app.extensions["newsletter.login_limit"].check(client, email)
    key = admins.client_key(client, settings().signing_keys[-1])
    with database() as db:
        if limited == admins.LoginLimit.CLIENT or (
                limited == admins.LoginLimit.ACCOUNT and not admins.is_known_client(db, email, key)):
            log.warning("login refused: too many attempts (%s limit, client %s)", limited, client)
            return None, LIMITED, 429
        account = admins.authenticate(db, email, password)
        if account is None:
            log.info("failed login to the %s (client %s)", where, client)
            return None, WRONG, 401
        admins.remember_client(db, account.id, key)
        token = websessions.open_session(db, account.id, client, settings().ops_session_seconds)
        audit.record(db, account.email, "logged in", where, client=client)
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = token
    g.account = account
    log.info("%s logged in to the %s", account.email, where)
    return account, "", 303


def log_out(where: str) -> None:
    token = session.get(SESSION_KEY)
    account = current_account()
    with database() as db:
        if isinstance(token, str):
            websessions.end_session(db, token)
        if account is not None:
            audit.record(db, account.email, "logged out", where, client=client_address())
    session.clear()
    g.account = None
