"""Invitation and password-reset links: signed, expiring, and good for one use.

The link carries the account and a stamp of its password hash. Setting a
password changes the stamp, so the same link never works twice; the
signature's age limits how long it works (``INVITATION_SECONDS``,
``RESET_SECONDS``).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.accounts import admins
from newsletter.config import Settings
from newsletter.accounts.notices import send_notice
from newsletter.errors import InputError, Problem
from newsletter.store.models import Admin, PublicationRow
from newsletter.audience.tokens import ACCOUNT, BadToken, make_token, read_token

INVITATION_SECONDS = 7 * 24 * 3600
RESET_SECONDS = 3600


def link_for(settings: Settings, admin: Admin, purpose: str) -> str:
    stamp = admins.operator_of(admin).password_stamp
    return f"{settings.base_url}/console/welcome/{make_token(settings, ACCOUNT, [admin.id, purpose, stamp])}"


def account_for_link(session: Session, settings: Settings, token: str) -> tuple[Admin, str]:
    """(account, purpose) when the link is good now; BadToken otherwise."""
    try:
        admin_id, purpose, stamp = read_token(settings, ACCOUNT, token, max_age=INVITATION_SECONDS)
    except (TypeError, ValueError):
        raise BadToken("this link is not valid") from None
    if purpose == "reset":
        read_token(settings, ACCOUNT, token, max_age=RESET_SECONDS)  # resets last an hour
    admin = session.get(Admin, admin_id)
    if admin is None or admin.disabled_at is not None or admins.operator_of(admin).password_stamp != stamp:
        raise BadToken("this link has been used already, or the account has changed since")
    return admin, purpose


def use_link(session: Session, settings: Settings, token: str, password: str, again: str) -> Admin:
    admin, _purpose = account_for_link(session, settings, token)
    if password != again:
        raise InputError(Problem("password", "the two passwords are not the same", "type the same password twice"))
    admins.set_password(session, admin, password)
    return admin


def send_invitation(session: Session, settings: Settings, admin: Admin, publication: PublicationRow,
                    roles: list[str], invited_by: str) -> list[str]:
    link = link_for(settings, admin, "invite")
    text = (f"Hello,\n\n{invited_by} has given you an account on the {publication.name} newsletter console "
            f"({', '.join(roles)}).\n\nChoose your password within {INVITATION_SECONDS // 86400} days here:\n\n"
            f"{link}\n\nThe link works once. If you did not expect this, ignore this email.\n")
    return send_notice(settings, publication, [admin.email], f"Your account on the {publication.name} console", text)


def send_reset(session: Session, settings: Settings, admin: Admin, publication: PublicationRow) -> list[str]:
    link = link_for(settings, admin, "reset")
    text = (f"Hello,\n\nSomeone, probably you, asked for a new password for the newsletter console.\n\n"
            f"Choose a new password within {RESET_SECONDS // 60} minutes here:\n\n{link}\n\n"
            "The link works once. If it was not you, ignore this email: your password stays as it is.\n")
    return send_notice(settings, publication, [admin.email], "A new password for the newsletter console", text)
