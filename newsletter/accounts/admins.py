"""Accounts: the people who log in to the comms console and the ops dashboard.

There is no default account and no default password: the first admin is
created from the command line (``newsletter admins create EMAIL``). An admin
invites the others from the console and gives them roles per publication
(editor, approver, operator; ``ROLES``). Passwords are kept only as
werkzeug's salted scrypt hashes.

A failed login never says whether the account exists: an unknown address
costs the same hash as a wrong password. How many logins may fail is
``login_limit``'s to say.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.models import ROLES, AccountRole, Admin, PublicationRow, utcnow
from newsletter.audience.subscribers import checked_address
from newsletter.accounts.websessions import end_sessions_of

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 1024  # scrypt of a megabyte-long "password" is a denial of service
HASH_METHOD = "scrypt"
# Checked when no account has the address, so that a miss takes as long as a wrong password.
_UNUSED_HASH = generate_password_hash("no account has this address", method=HASH_METHOD)


@dataclass(frozen=True)
class Operator:
    """Who is logged in: what a session holds and what actions are logged with."""

    id: int
    email: str
    password_stamp: str  # changes with the password: a reset link works once
    is_admin: bool = False


@dataclass(frozen=True)
class AdminSummary:
    email: str
    created_at: datetime
    last_login_at: datetime | None


def login_name(raw: str) -> str:
    """The form an address is stored and looked up in."""
    return raw.strip().lower()


def checked_password(password: str, where: str = "password") -> str:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InputError(Problem(where, f"it has {len(password)} characters; at least {PASSWORD_MIN_LENGTH} are needed",
                                 "choose a longer one, e.g. a few unrelated words"))
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InputError(Problem(where, f"it has more than {PASSWORD_MAX_LENGTH} characters", "choose a shorter one"))
    return password


def create_admin(session: Session, email: str, password: str) -> Admin:
    address = login_name(checked_address(email, "EMAIL"))
    if _find(session, address) is not None:
        raise InputError(Problem("EMAIL", f"there is an account {address} already",
                                 "use `newsletter admins reset-password` to give it a new password"))
    admin = Admin(email=address, password_hash=_hash(checked_password(password)), is_admin=True)
    session.add(admin)
    session.flush()
    log.info("operator %s created", address)
    return admin


def list_admins(session: Session) -> list[AdminSummary]:
    rows = session.scalars(select(Admin).order_by(Admin.email)).all()
    return [AdminSummary(a.email, a.created_at, a.last_login_at) for a in rows]


def remove_admin(session: Session, email: str) -> None:
    address = login_name(email)
    admin = _find(session, address)
    if admin is not None:
        end_sessions_of(session, admin.id)
    if session.execute(delete(Admin).where(Admin.email == address)).rowcount != 1:
        raise NotFound(f"there is no account {address}; `newsletter admins list` shows them")
    log.info("operator %s removed", address)


def reset_password(session: Session, email: str, password: str) -> None:
    admin = _find(session, login_name(email))
    if admin is None:
        raise NotFound(f"there is no account {login_name(email)}; `newsletter admins list` shows them")
    set_password(session, admin, password)
    log.info("password of operator %s reset", admin.email)


def set_password(session: Session, admin: Admin, password: str) -> None:
    """A new password; every open session of the account ends at once."""
    admin.password_hash = _hash(checked_password(password))
    admin.password_changed_at = utcnow()
    end_sessions_of(session, admin.id)


def change_password(session: Session, admin_id: int, current: str, new: str) -> None:
    admin = session.get(Admin, admin_id)
    if admin is None or not admin.password_hash or not check_password_hash(admin.password_hash, current[:PASSWORD_MAX_LENGTH]):
        raise InputError(Problem("current password", "it is not your current password", "type it again"))
    set_password(session, admin, new)


def authenticate(session: Session, email: str, password: str) -> Operator | None:
    """The operator, when the password is theirs; None otherwise, whatever the reason."""
    admin = _find(session, login_name(email)) if len(password) <= PASSWORD_MAX_LENGTH else None
    if admin is None or not admin.password_hash or admin.disabled_at is not None:
        check_password_hash(_UNUSED_HASH, password[:PASSWORD_MAX_LENGTH])  # same cost as a real check
        return None
    if not check_password_hash(admin.password_hash, password):
        return None
    admin.last_login_at = utcnow()
    return operator_of(admin)


def operator_by_id(session: Session, admin_id: int, password_stamp: str) -> Operator | None:
    """The operator a session names, unless removed or their password changed since."""
    admin = session.get(Admin, admin_id)
    if admin is None:
        return None
    operator = operator_of(admin)
    return operator if operator.password_stamp == password_stamp else None


def operator_of(admin: Admin) -> Operator:
    stamp = hashlib.sha256(admin.password_hash.encode()).hexdigest()[:16]
    return Operator(admin.id, admin.email, stamp, bool(admin.is_admin))


# --- accounts and roles ---------------------------------------------------------------


def invite_account(session: Session, email: str, publication_id: int, roles: list[str]) -> Admin:
    """An account with no password yet (its invitation link sets one), or new roles for an existing one."""
    address = login_name(checked_address(email, "email"))
    admin = _find(session, address)
    if admin is None:
        admin = Admin(email=address, password_hash="", is_admin=False)
        session.add(admin)
        session.flush()
    set_roles(session, admin.id, publication_id, roles)
    return admin


def set_roles(session: Session, admin_id: int, publication_id: int, roles: list[str]) -> None:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InputError(Problem("roles", f"there is no role {unknown[0]!r}", f"choose among {', '.join(ROLES)}"))
    session.execute(delete(AccountRole).where(AccountRole.admin_id == admin_id,
                                              AccountRole.publication_id == publication_id))
    for role in dict.fromkeys(roles):
        session.add(AccountRole(admin_id=admin_id, publication_id=publication_id, role=role))
    session.flush()


def roles_of(session: Session, admin_id: int) -> dict[int, set[str]]:
    """publication id -> the account's roles there."""
    held: dict[int, set[str]] = {}
    for row in session.scalars(select(AccountRole).where(AccountRole.admin_id == admin_id)):
        held.setdefault(row.publication_id, set()).add(row.role)
    return held


def has_role(session: Session, operator: Operator, publication_id: int, role: str) -> bool:
    """Admins may do everything; others what their roles in the publication say."""
    return operator.is_admin or role in roles_of(session, operator.id).get(publication_id, set())


def may_operate(session: Session, operator: Operator) -> bool:
    """The ops dashboard is for admins and anyone who is an operator somewhere."""
    return operator.is_admin or any("operator" in roles for roles in roles_of(session, operator.id).values())


def revoke_account(session: Session, admin_id: int) -> None:
    """No more logins, and every open session ends now. The account and its history stay."""
    session.execute(update(Admin).where(Admin.id == admin_id).values(disabled_at=utcnow()))
    end_sessions_of(session, admin_id)


def restore_account(session: Session, admin_id: int) -> None:
    session.execute(update(Admin).where(Admin.id == admin_id).values(disabled_at=None))


@dataclass(frozen=True)
class AccountView:
    id: int
    email: str
    is_admin: bool
    revoked: bool
    invited: bool  # no password set yet
    roles: dict[str, list[str]]  # publication slug -> roles
    last_login_at: datetime | None


def account_views(session: Session) -> list[AccountView]:
    slugs = dict(session.execute(select(PublicationRow.id, PublicationRow.slug)).all())
    views = []
    for admin in session.scalars(select(Admin).order_by(Admin.email)):
        roles = {slugs.get(pub, str(pub)): sorted(r) for pub, r in roles_of(session, admin.id).items()}
        views.append(AccountView(admin.id, admin.email, bool(admin.is_admin), admin.disabled_at is not None,
                                 not admin.password_hash, roles, admin.last_login_at))
    return views


def people_with_role(session: Session, publication_id: int, role: str) -> list[str]:
    """Addresses of the live accounts holding a role in a publication, admins not included."""
    query = (select(Admin.email).join(AccountRole, AccountRole.admin_id == Admin.id)
             .where(AccountRole.publication_id == publication_id, AccountRole.role == role,
                    Admin.disabled_at.is_(None), Admin.password_hash != ""))
    return sorted(set(session.scalars(query)))


def _find(session: Session, address: str) -> Admin | None:
    return session.scalars(select(Admin).where(Admin.email == address)).one_or_none()


def _hash(password: str) -> str:
    return generate_password_hash(password, method=HASH_METHOD)
