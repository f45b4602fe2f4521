"""Provider webhooks: verify first, then parse into ``events.Event`` values.

Each provider has a module with ``SOURCE`` and ``receive(session, settings,
inbound, now=None, **options) -> list[Event]``, named by its transport's
``webhook`` (transports/<name>.py); its settings are in the transport's group
in config.py. ``receive`` raises ``Refused`` (a 4xx) before anything is
parsed when a request is not provably from the provider or is stale; and
``Malformed`` (a 400) when a verified body is not what the provider
documents. The same request again is not refused: every event is recorded
once by its key, so a replay changes nothing and is answered 200 (what
providers expect of a retry), for every provider alike.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.store.models import WebhookNonce, utcnow

# How far ahead of our clock a provider's timestamp may be.
CLOCK_SKEW = timedelta(minutes=5)


class Refused(Exception):
    """The request is not accepted; nothing was changed."""

    def __init__(self, reason: str, status: int = 403):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Malformed(Refused):
    def __init__(self, reason: str):
        super().__init__(f"malformed body: {reason}", 400)


@dataclass(frozen=True)
class Inbound:
    """A webhook request as it arrived: the exact body bytes and the headers."""

    body: bytes
    headers: Mapping[str, str]

    @classmethod
    def of(cls, body: bytes, headers) -> "Inbound":
        return cls(body, {name.lower(): value for name, value in dict(headers).items()})

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def json_body(body: bytes, shape: type = dict):
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Malformed("not JSON") from None
    if not isinstance(value, shape):
        raise Malformed(f"expected a JSON {'object' if shape is dict else 'array'}")
    return value


@contextmanager
def parsing(what: str) -> Iterator[None]:
    """A verified body that lacks a field or has one of the wrong type is a 400, not a 500."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Malformed(f"{what}: {type(exc).__name__} {exc}"[:200]) from None


def check_fresh(settings: Settings, signed_at: datetime, now: datetime | None = None) -> None:
    now = now or utcnow()
    if signed_at < now - timedelta(seconds=settings.webhook_max_age_seconds) or signed_at > now + CLOCK_SKEW:
        raise Refused("stale or future timestamp")


def unix_time(value) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise Malformed("timestamp is not a number of seconds") from None


def remember_nonce(session: Session, source: str, nonce: str, content: str, now: datetime | None = None) -> None:
    """Accept a signed one-time token with one content only (``fingerprint`` of the body).

    Mailgun's signature covers the timestamp and token but not the body, so a
    captured token on another body is refused. The same request again (a
    provider's retry, or a replay) is let through: its events are recorded
    once by their keys, so it changes nothing, and a 200 stops the retries.
    """
    from newsletter.feedback.events import insert_once

    now = now or utcnow()
    token = nonce[:135]
    with_body = f"{token}:{content[:64]}"  # 200 characters at most
    if insert_once(session, WebhookNonce, {"source": source, "nonce": token, "seen_at": now}, ["source", "nonce"]):
        insert_once(session, WebhookNonce, {"source": source, "nonce": with_body, "seen_at": now}, ["source", "nonce"])
        return
    seen = select(WebhookNonce.id).where(WebhookNonce.source == source, WebhookNonce.nonce == with_body)
    if session.scalar(seen) is None:
        raise Refused("this token was already used with another body")


def fingerprint(item) -> str:
    """A stable key for an event the provider gave no id to."""
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


@cache
def providers() -> dict:
    """SOURCE -> module, for every transport that names a webhook module (its ``webhook``)."""
    from newsletter.transports import TRANSPORTS, transport_class

    named = (getattr(transport_class(name), "webhook", "") for name in TRANSPORTS)
    modules = [importlib.import_module(f"{__name__}.{module}") for module in named if module]
    return {module.SOURCE: module for module in modules}
