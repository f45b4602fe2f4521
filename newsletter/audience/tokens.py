"""Signed, purpose-bound tokens for the links in every email.

A token is a JSON payload signed with the install's secret keys. Each purpose
has its own salt, so an unsubscribe token can never be replayed as a
confirmation and the other way round. Keys rotate: ``Settings.signing_keys``
lists the newest first; the newest signs and all of them verify, so links in
mail sent before a rotation keep working until the old key is removed.

Confirmation tokens carry a timestamp and expire. Unsubscribe and preferences
tokens do not: a link in a years-old email must still let a person leave.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from newsletter.config import Settings
from newsletter.errors import NewsletterError

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
ACCOUNT = "account"  # an invitation or a password reset for a console account
PURPOSES = (CONFIRM, UNSUBSCRIBE, PREFERENCES, ACCOUNT)

# How long a subscription confirmation link works when the caller does not say.
CONFIRM_MAX_AGE_SECONDS = 7 * 24 * 3600

_TIMED_PURPOSES = frozenset({CONFIRM, ACCOUNT})
_SIGNER_KWARGS = {"digest_method": hashlib.sha256}


class BadToken(NewsletterError):
    """A link's token was altered, made for another purpose, signed with a key
    we no longer hold, or (for confirmation links) has expired."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


def make_token(settings: Settings, purpose: str, payload: Any) -> str:
    """Sign a JSON-serialisable payload for one purpose with the newest key."""
    if purpose in _TIMED_PURPOSES:
        return _serializer(settings.signing_keys, purpose).dumps(payload)
    return _link_signer(settings.signing_keys, purpose).sign(payload)


def read_token(settings: Settings, purpose: str, token: str, max_age: int | None = None) -> Any:
    """The payload of a token made for ``purpose``, or ``BadToken``.

    ``max_age`` (seconds) applies to confirmation tokens only; it defaults to
    ``CONFIRM_MAX_AGE_SECONDS``. The other purposes never expire.
    """
    serializer = _serializer(settings.signing_keys, purpose)
    if purpose not in _TIMED_PURPOSES:
        if max_age is not None:
            raise ValueError(f"{purpose} tokens do not expire; max_age applies to timed purposes only")
        return _loads(serializer, token)
    if max_age is None:
        max_age = CONFIRM_MAX_AGE_SECONDS
    return _loads(serializer, token, max_age=max_age)


def unsubscribe_url(settings: Settings, send_id: int, subscriber_id: int) -> str:
    """The one-click unsubscribe link for one recipient of one send."""
    return f"{settings.base_url}/u/{make_token(settings, UNSUBSCRIBE, [send_id, subscriber_id])}"


def preferences_url(settings: Settings, subscriber_id: int) -> str:
    """The link where a subscriber manages their lists."""
    return f"{settings.base_url}/p/{make_token(settings, PREFERENCES, subscriber_id)}"


class _LinkSigner:
    """Makes the tokens of the links in every email, as itsdangerous makes them.

    ``URLSafeSerializer.dumps`` builds a signer, derives its key and keys a
    new HMAC for every token, and tries zlib on the payload (about 40 µs
    a token, two tokens a message). Here the key is derived and the HMAC keyed
    once; each token copies the keyed HMAC. The payload is never compressed:
    compression only pays for long payloads, and itsdangerous reads both
    forms. The tokens are the ones itsdangerous makes and reads (the tests
    compare them), so nothing about their security changes.
    """

    def __init__(self, serializer: URLSafeSerializer):
        signer = serializer.make_signer()
        self._sep = signer.sep
        self._keyed = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    def sign(self, payload: Any) -> str:
        value = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        mac = self._keyed.copy()
        mac.update(value)
        return (value + self._sep + _b64(mac.digest())).decode("ascii")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@lru_cache(maxsize=32)
def _link_signer(keys: tuple[str, ...], purpose: str) -> _LinkSigner:
    return _LinkSigner(_serializer(keys, purpose))


def _loads(serializer: URLSafeSerializer, token: str, **kwargs) -> Any:
    try:
        return serializer.loads(token, **kwargs)
    except SignatureExpired:
        raise BadToken("this link has expired", expired=True) from None
    except BadData:
        # Tampered, wrong purpose, unknown key and malformed all look the same
        # from outside; saying which would help only someone forging tokens.
        raise BadToken("this link is not valid") from None


# Building a serializer derives a key per secret; it runs for every message,
# so keep one per (keys, purpose). Keys are part of the cache key, so a
# rotation in a new Settings gets new serializers.
@lru_cache(maxsize=32)
def _serializer(keys: tuple[str, ...], purpose: str) -> URLSafeSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    if not keys:
        raise ValueError("no signing keys configured")
    # itsdangerous signs with the last key and verifies with all: newest last.
    secret_keys = list(reversed(keys))
    cls = URLSafeTimedSerializer if purpose in _TIMED_PURPOSES else URLSafeSerializer
    return cls(secret_keys, salt=f"newsletter.{purpose}", signer_kwargs=_SIGNER_KWARGS)
