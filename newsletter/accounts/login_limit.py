"""The login limit: how many logins may fail, per client address and per account.

``LoginLimit`` counts failures with the ``limits`` library: in Redis when it
is configured, so every web process agrees, in memory otherwise. The
per-account limit must not lock the owner out, so the clients an account has
logged in from are remembered (``remember_client``), as keyed hashes, and let
through (``is_known_client``).
"""

from __future__ import annotations

import hashlib
import logging

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts.admins import login_name
from newsletter.config import Settings
from newsletter.store.models import Admin, LoginClient, utcnow

log = logging.getLogger(__name__)


class LoginLimit:
    """At most ``ops_login_attempts`` failed logins per window per client address and per account.

    Only failures count (``failed``), and a login that succeeds clears its
    account's count (``succeeded``): a team behind one outgoing address logs in
    all morning without meeting the limit, while a guesser meets it after a few
    wrong passwords. ``check`` is asked before the password is; the per-account
    limit must not lock the owner out, so it tells the two limits apart and the
    caller lets an account-limited login through from an address the account
    has logged in from before (``is_known_client``).

    The counts are a moving window of the ``limits`` library: in Redis when it
    is configured, so every web process agrees, in memory otherwise. When Redis
    cannot be reached this process counts alone rather than lock everyone out.
    """

    CLIENT, ACCOUNT = "client", "account"

    def __init__(self, settings: Settings, prefix: str = "ops-login"):
        self.attempts = settings.ops_login_attempts
        self.item = RateLimitItemPerSecond(max(1, self.attempts), max(1, settings.ops_login_window_seconds))
        self.prefix = prefix
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared = MovingWindowRateLimiter(storage_from_string(
            settings.redis_url, key_prefix="newsletter", wrap_exceptions=True,
            socket_connect_timeout=2, socket_timeout=2)) if settings.redis_url else None

    def check(self, client: str, email: str) -> str:
        """"" when a login may be tried now, else which limit it met (CLIENT or ACCOUNT)."""
        if self.attempts <= 0:
            return ""
        if not self._ask("test", self.CLIENT, client):
            return self.CLIENT
        if not self._ask("test", self.ACCOUNT, login_name(email)):
            return self.ACCOUNT
        return ""

    def failed(self, client: str, email: str) -> None:
        """Count a wrong password (or an unknown account) against the address and the account."""
        if self.attempts > 0:
            self._ask("hit", self.CLIENT, client)
            self._ask("hit", self.ACCOUNT, login_name(email))

    def succeeded(self, email: str) -> None:
        """The owner is in: the account's failures no longer count."""
        if self.attempts > 0:
            self._ask("clear", self.ACCOUNT, login_name(email))

    def allow(self, client: str, email: str) -> bool:
        """Count one request that is not a login (a password reset) and say whether it may go ahead."""
        return self.attempts <= 0 or (self._ask("hit", "reset-" + self.CLIENT, client) and
                                      self._ask("hit", "reset-" + self.ACCOUNT, login_name(email)))

    def _ask(self, what: str, kind: str, who: str):
        keys = (self.prefix, kind, who)
        if self._shared is not None:
            try:
                return getattr(self._shared, what)(self.item, *keys)
            except StorageError:
                # The dashboard is where an operator sees that Redis is down:
                # count in this process rather than lock them out.
                log.warning("Redis unreachable for the login limit; counting in this process")
        return getattr(self._local, what)(self.item, *keys)


# --- known clients: the per-account limit lets the owner through ---------------------


def client_key(client: str, secret: str) -> str:
    """A keyed hash: the table never holds a client's address."""
    return hashlib.sha256(f"{secret}\0{client}".encode()).hexdigest()


def remember_client(session: Session, admin_id: int, key: str) -> None:
    row = session.scalars(select(LoginClient).where(LoginClient.admin_id == admin_id,
                                                    LoginClient.client_key == key)).one_or_none()
    if row is None:
        session.add(LoginClient(admin_id=admin_id, client_key=key))
    else:
        row.last_login_at = utcnow()


def is_known_client(session: Session, email: str, key: str) -> bool:
    """Whether the account with this address has logged in from the client before."""
    return session.scalar(
        select(LoginClient.id).join(Admin, Admin.id == LoginClient.admin_id)
        .where(Admin.email == login_name(email), LoginClient.client_key == key)) is not None
