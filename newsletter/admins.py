"""Operators: the people who may log in to the ops dashboard.

There is no default account and no default password: the first operator is
created from the command line (``newsletter admins create EMAIL``). Passwords
are kept only as werkzeug's salted scrypt hashes.

Logging in is limited per client address and per account (a GCRA limit from
``newsletter.ratelimit``: in Redis when configured, so every web process
agrees, in memory otherwise), and a failed login never says whether the
account exists: an unknown address costs the same hash as a wrong password.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from newsletter.config import Settings
from newsletter.errors import InputError, NotFound, Problem
from newsletter.ratelimit import (
    LocalRateLimiter,
    RateLimiterUnavailable,
    RedisRateLimiter,
)
from newsletter.store.models import Admin, utcnow
from newsletter.subscribers import checked_address

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
    password_stamp: str  # changes with the password: a reset ends every session


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
        raise InputError(Problem("EMAIL", f"there is an operator {address} already",
                                 "use `newsletter admins reset-password` to give it a new password"))
    admin = Admin(email=address, password_hash=_hash(checked_password(password)))
    session.add(admin)
    session.flush()
    log.info("operator %s created", address)
    return admin


def list_admins(session: Session) -> list[AdminSummary]:
    rows = session.scalars(select(Admin).order_by(Admin.email)).all()
    return [AdminSummary(a.email, a.created_at, a.last_login_at) for a in rows]


def remove_admin(session: Session, email: str) -> None:
    address = login_name(email)
    if session.execute(delete(Admin).where(Admin.email == address)).rowcount != 1:
        raise NotFound(f"there is no operator {address}; `newsletter admins list` shows them")
    log.info("operator %s removed", address)


def reset_password(session: Session, email: str, password: str) -> None:
    admin = _find(session, login_name(email))
    if admin is None:
        raise NotFound(f"there is no operator {login_name(email)}; `newsletter admins list` shows them")
    admin.password_hash = _hash(checked_password(password))
    admin.password_changed_at = utcnow()
    log.info("password of operator %s reset", admin.email)


def authenticate(session: Session, email: str, password: str) -> Operator | None:
    """The operator, when the password is theirs; None otherwise, whatever the reason."""
    admin = _find(session, login_name(email)) if len(password) <= PASSWORD_MAX_LENGTH else None
    if admin is None:
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
    return Operator(admin.id, admin.email, stamp)


def _find(session: Session, address: str) -> Admin | None:
    return session.scalars(select(Admin).where(Admin.email == address)).one_or_none()


def _hash(password: str) -> str:
    return generate_password_hash(password, method=HASH_METHOD)


# --- the login limit ------------------------------------------------------------------


class LoginLimit:
    """At most ``ops_login_attempts`` logins per window per client address and per account.

    Every attempt counts, right or wrong, and before the password is checked:
    someone guessing from many addresses still meets the per-account limit.
    """

    LOCAL_KEYS_KEPT = 10_000  # in-memory limiters, least recently used dropped first

    def __init__(self, settings: Settings):
        self.attempts = settings.ops_login_attempts
        self.rate = self.attempts / max(1, settings.ops_login_window_seconds)
        self.redis_url = settings.redis_url
        self._local: OrderedDict[str, LocalRateLimiter] = OrderedDict()
        self._lock = threading.Lock()  # the web server answers on several threads

    def allow(self, client: str, email: str) -> bool:
        if self.attempts <= 0:
            return True
        # Both are counted, so a client cannot spend one without the other.
        by_client = self._try(f"client:{client}")
        by_account = self._try(f"account:{login_name(email)}")
        return by_client and by_account

    def _try(self, key: str) -> bool:
        if self.redis_url:
            try:
                limiter = RedisRateLimiter(self.redis_url, f"newsletter:ops-login:{key}", self.rate, self.attempts)
                return limiter.try_acquire()
            except RateLimiterUnavailable:
                # The dashboard is where an operator sees that Redis is down:
                # fall back to this process's own count rather than lock them out.
                log.warning("Redis unreachable for the login limit; counting in this process")
        return self._local_limiter(key).try_acquire()

    def _local_limiter(self, key: str) -> LocalRateLimiter:
        with self._lock:
            return self._local_limiter_locked(key)

    def _local_limiter_locked(self, key: str) -> LocalRateLimiter:
        limiter = self._local.pop(key, None) or LocalRateLimiter(self.rate, self.attempts)
        self._local[key] = limiter
        while len(self._local) > self.LOCAL_KEYS_KEPT:
            self._local.popitem(last=False)
        return limiter
