"""Logged-in browsers, kept on the server so that they can be ended at once.

The cookie holds only a random token; the database keeps its SHA-256. Every
request looks the token up, so logging out, a new password and an admin
revoking an account end a session on every web process at the next request,
not when a signed cookie would have expired.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.store.models import Admin, WebSession, utcnow


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, admin_id: int, client: str, lifetime_seconds: int,
                 now: datetime | None = None) -> str:
    """A new session for the account; returns the token the cookie carries."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # tidy as we go
    session.add(WebSession(token_hash=_digest(token), admin_id=admin_id, client=client[:100],
                           created_at=now, expires_at=now + timedelta(seconds=lifetime_seconds)))
    session.flush()
    return token


def account_of(session: Session, token: str, now: datetime | None = None) -> Admin | None:
    """The account a live session belongs to; None when ended, expired or revoked."""
    if not token:
        return None
    row = session.scalars(select(WebSession).where(WebSession.token_hash == _digest(token))).one_or_none()
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    account = session.get(Admin, row.admin_id)
    if account is None or account.disabled_at is not None:
        return None
    return account


def end_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))


def end_sessions_of(session: Session, admin_id: int) -> int:
    """End every session of an account (a new password, a revoked account); returns how many."""
    return session.execute(delete(WebSession).where(WebSession.admin_id == admin_id)).rowcount
