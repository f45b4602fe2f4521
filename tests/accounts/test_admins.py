"""Operator accounts: made, listed, removed and reset from the command line; passwords
hashed; a login that fails says nothing about whether the account exists."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter.accounts import admins
from newsletter.errors import InputError, NotFound
from newsletter.store.models import Admin

PASSWORD = "correct horse battery staple"


def test_create_prompts_twice_and_keeps_only_a_hash(cli, session):
    result = cli("admins", "create", "Ops@Example.org", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Admin ops@example.org created" in result.output
    assert session.scalars(select(Admin)).one().is_admin  # the first account manages the others
    stored = session.scalars(select(Admin)).one()
    assert stored.email == "ops@example.org"
    assert PASSWORD not in stored.password_hash and stored.password_hash.startswith("scrypt:32768:8:1$")  # werkzeug's default cost
    assert admins.authenticate(session, "OPS@example.org", PASSWORD).email == "ops@example.org"


def test_create_refuses_mismatched_short_or_duplicate_passwords_and_bad_addresses(cli):
    mismatched = cli("admins", "create", "ops@example.org", input=f"{PASSWORD}\nsomething else entirely\n"
                                                                   f"{PASSWORD}\n{PASSWORD}\n")
    assert "do not match" in mismatched.output.lower() and mismatched.exit_code == 0  # asked again, then made
    short = cli("admins", "create", "two@example.org", input="short\nshort\n")
    assert short.exit_code == 2 and "at least 12" in short.output
    again = cli("admins", "create", "ops@example.org", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert again.exit_code == 2 and "already" in again.output and "reset-password" in again.output
    bad = cli("admins", "create", "not-an-address", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert bad.exit_code == 2 and "not an email address" in bad.output
    assert "Traceback" not in short.output + again.output + bad.output
    listed = cli("admins", "list")
    assert "ops@example.org" in listed.output and "two@example.org" not in listed.output


def test_list_remove_and_reset_password(cli, session):
    assert "No operators yet" in cli("admins", "list").output
    cli("admins", "create", "ops@example.org", input=f"{PASSWORD}\n{PASSWORD}\n")
    new = "a different long passphrase"
    reset = cli("admins", "reset-password", "ops@example.org", input=f"{new}\n{new}\n")
    assert reset.exit_code == 0, reset.output
    session.expire_all()
    assert admins.authenticate(session, "ops@example.org", PASSWORD) is None
    assert admins.authenticate(session, "ops@example.org", new) is not None
    session.commit()  # the login is recorded; let the command write

    assert cli("admins", "remove", "ops@example.org").exit_code == 0
    missing = cli("admins", "remove", "ops@example.org")
    assert missing.exit_code == 2 and "no account ops@example.org" in missing.output
    assert "No operators yet" in cli("admins", "list").output


def test_a_wrong_password_and_an_unknown_account_fail_alike(session):
    admins.create_admin(session, "ops@example.org", PASSWORD)
    assert admins.authenticate(session, "ops@example.org", "wrong password here") is None
    assert admins.authenticate(session, "nobody@example.org", PASSWORD) is None
    assert admins.authenticate(session, "ops@example.org", "x" * 5000) is None


def test_a_reset_password_ends_sessions_made_before_it(session):
    admins.create_admin(session, "ops@example.org", PASSWORD)
    operator = admins.authenticate(session, "ops@example.org", PASSWORD)
    assert admins.operator_by_id(session, operator.id, operator.password_stamp) == operator
    admins.reset_password(session, "ops@example.org", "a new long passphrase")
    assert admins.operator_by_id(session, operator.id, operator.password_stamp) is None
    with pytest.raises(NotFound):
        admins.reset_password(session, "nobody@example.org", "a new long passphrase")
    with pytest.raises(InputError):
        admins.create_admin(session, "other@example.org", "short")
