"""Accounts as the console and the dashboard share them: server-side sessions that
logout, a new password and a revoked account end at once; a login limit per account
that slows guessers without locking the owner out; the audit log."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from newsletter.accounts import admins
from newsletter.store.db import session_scope
from newsletter.store.models import Admin, AuditEntry
from newsletter.web import create_app
from tests.passwords import quick_hashes
from tests.ops_world import OPERATOR, PASSWORD, csrf_of, log_in


@pytest.fixture
def app(settings):
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, OPERATOR, PASSWORD)
    return create_app(settings)


def stolen_copy(client, app):
    """Another browser holding the same cookie: what someone who copied it has."""
    thief = app.test_client()
    cookie = client.get_cookie("session")
    thief.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    return thief


def test_a_cookie_kept_from_before_logout_no_longer_works(app):
    client = app.test_client()
    assert log_in(client).status_code == 303
    thief = stolen_copy(client, app)
    assert thief.get("/ops/").status_code == 200
    client.post("/console/logout", data={"csrf_token": csrf_of(client, "/ops/")})
    # The session ended on the server: the copy cannot cancel a send.
    assert thief.get("/ops/").status_code == 302
    assert thief.get("/ops/status.json").status_code == 401


def test_a_password_change_and_a_revoked_account_end_sessions_at_once(app, settings):
    client = app.test_client()
    assert log_in(client).status_code == 303
    with session_scope(settings) as session:
        admin = session.scalars(select(Admin).where(Admin.email == OPERATOR)).one()
        admins.change_password(session, admin.id, PASSWORD, "another long passphrase here")
    assert client.get("/ops/").status_code == 302

    assert log_in(client, password="another long passphrase here").status_code == 303
    with session_scope(settings) as session:
        admins.revoke_account(session, admin.id)
    assert client.get("/ops/").status_code == 302
    assert log_in(app.test_client(), password="another long passphrase here").status_code == 401


def test_guessers_meet_the_account_limit_but_the_owner_gets_in_from_a_known_address(settings):
    settings = replace(settings, ops_login_attempts=3)
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, OPERATOR, PASSWORD)
    app = create_app(settings)
    assert log_in(app.test_client(), REMOTE_ADDR="198.51.100.9").status_code == 303  # the owner, at the office
    for n in range(6):  # guessers, each from another address
        log_in(app.test_client(), password="a wrong guess number", REMOTE_ADDR=f"192.0.2.{n}")
    assert log_in(app.test_client(), REMOTE_ADDR="192.0.2.77").status_code == 429  # a new address is held up
    assert log_in(app.test_client(), REMOTE_ADDR="198.51.100.9").status_code == 303  # the owner is not


@pytest.mark.parametrize("shared", ["local", "redis"])
def test_only_failures_count_and_a_success_clears_the_accounts_count(settings, shared, request):
    if shared == "redis":
        settings = replace(settings, redis_url=request.getfixturevalue("redis_url"))
    settings = replace(settings, ops_login_attempts=3)
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, OPERATOR, PASSWORD)
    app = create_app(settings)
    # A team behind one outgoing address logs in all morning.
    for _ in range(7):
        assert log_in(app.test_client(), REMOTE_ADDR="198.51.100.1").status_code == 303
    # Two typing mistakes, then the right password, from a new address each time: the
    # account's count starts again after every success, so it never meets its limit.
    for n in range(3):
        for m in range(2):
            assert log_in(app.test_client(), password="a typing mistake", REMOTE_ADDR=f"203.0.113.{n * 2 + m}").status_code == 401
        assert log_in(app.test_client(), REMOTE_ADDR=f"192.0.2.{50 + n}").status_code == 303
    # The limit on guessing holds: three failures from one address and it waits.
    for _ in range(3):
        assert log_in(app.test_client(), password="a guess", REMOTE_ADDR="192.0.2.200").status_code == 401
    refused = log_in(app.test_client(), REMOTE_ADDR="192.0.2.200")
    assert refused.status_code == 429
    assert "Too many failed attempts to log in" in refused.get_data(as_text=True)


def test_logins_and_logouts_are_in_the_audit_log_with_the_address(app, settings):
    client = app.test_client()
    log_in(client, REMOTE_ADDR="203.0.113.5")
    client.post("/console/logout", data={"csrf_token": csrf_of(client, "/ops/")}, environ_base={"REMOTE_ADDR": "203.0.113.5"})
    with session_scope(settings) as session:
        entries = [(e.actor, e.action, e.client) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert entries == [(OPERATOR, "logged in", "203.0.113.5"), (OPERATOR, "logged out", "203.0.113.5")]
