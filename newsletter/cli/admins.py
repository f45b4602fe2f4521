"""`newsletter admins`: the admins, who may log in to the comms console and the ops dashboard.

The first admin is made here: the web app has no default account. Admins
invite everyone else from the console (/console/accounts), with roles per
publication; `list`, `remove` and `reset-password` work on those accounts too.
Passwords are typed at a prompt (twice, not echoed), never given as arguments,
so they stay out of shell history and process lists.
"""

from __future__ import annotations

import click
from rich.table import Table

from newsletter.accounts import admins as operators
from newsletter.cli import LazyConsole, main
from newsletter.config import get_settings
from newsletter.store.db import session_scope
from newsletter.store.migrate import upgrade

console = LazyConsole()


def _session():
    settings = get_settings()
    upgrade(settings.effective_database_url)
    return session_scope(settings)


def _password_prompt():
    return click.option(
        "--password", prompt=True, hide_input=True, confirmation_prompt=True,
        help=f"Asked for at a prompt when not given (at least {operators.PASSWORD_MIN_LENGTH} characters).",
    )


@main.group()
def admins():
    """Accounts of the comms console and the ops dashboard; `create` makes an admin."""


@admins.command()
@click.argument("email")
@_password_prompt()
def create(email: str, password: str):
    """Create an admin; you are asked for the password twice."""
    with _session() as session:
        admin = operators.create_admin(session, email, password)
        address = admin.email
    base = get_settings().base_url
    console.print(f"Admin [bold]{address}[/] created; they can log in at {base}/console/ (and {base}/ops/)",
                  highlight=False)


@admins.command("list")
def list_():
    """Every operator, with when they last logged in."""
    with _session() as session:
        rows = operators.list_admins(session)
    if not rows:
        console.print("No operators yet: `newsletter admins create EMAIL` makes the first.")
        return
    table = Table("email", "created (UTC)", "last login (UTC)")
    for row in rows:
        last = f"{row.last_login_at:%Y-%m-%d %H:%M}" if row.last_login_at else "never"
        table.add_row(row.email, f"{row.created_at:%Y-%m-%d %H:%M}", last)
    console.print(table)


@admins.command()
@click.argument("email")
def remove(email: str):
    """Remove an account; its open sessions end at once."""
    with _session() as session:
        operators.remove_admin(session, email)
    console.print(f"Operator {operators.login_name(email)} removed.", highlight=False)


@admins.command("reset-password")
@click.argument("email")
@_password_prompt()
def reset_password(email: str, password: str):
    """Give an account a new password; its open sessions end."""
    with _session() as session:
        operators.reset_password(session, email, password)
    console.print(f"Password of {operators.login_name(email)} changed; their open sessions have ended.",
                  highlight=False)
