"""Mailgun webhooks: HMAC-SHA256 of timestamp + token with the webhook signing key.

A timestamp is accepted only within ``webhook_max_age_seconds``, and a token
with one body only (the nonce table): the signature does not cover the body,
so a captured token cannot carry other events. The same request again changes
nothing (its events are recorded once) and gets a 200.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.feedback.events import BOUNCED, COMPLAINED, DELIVERED, HARD, SOFT, UNSUBSCRIBED, Event
from newsletter.feedback.webhooks import (
    Inbound, Malformed, Refused, check_fresh, fingerprint, json_body, parsing, remember_nonce, unix_time,
)

SOURCE = "mailgun"
KINDS = {"delivered": DELIVERED, "failed": BOUNCED, "complained": COMPLAINED, "unsubscribed": UNSUBSCRIBED}


def signature_of(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def receive(session: Session, settings: Settings, inbound: Inbound, now: datetime | None = None) -> list[Event]:
    if not settings.mailgun_webhook_signing_key:
        raise Refused("the Mailgun webhook is not configured", 404)
    payload = json_body(inbound.body)
    signed = payload.get("signature")
    if not isinstance(signed, dict) or not all(isinstance(signed.get(k), str) for k in ("timestamp", "token", "signature")):
        raise Refused("unsigned request")
    expected = signature_of(settings.mailgun_webhook_signing_key, signed["timestamp"], signed["token"])
    if not hmac.compare_digest(expected, signed["signature"]):
        raise Refused("bad signature")
    check_fresh(settings, unix_time(signed["timestamp"]), now)
    remember_nonce(session, SOURCE, signed["token"], fingerprint(payload), now)
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise Malformed("no event-data")
    with parsing("Mailgun event"):
        event = _event(data)
    return [event] if event else []


def _event(data: dict) -> Event | None:
    kind = KINDS.get(data["event"])
    if kind is None:
        return None  # accepted, opened, clicked, stored
    bounce = ""
    if kind == BOUNCED:
        bounce = HARD if data.get("severity") == "permanent" else SOFT
    header_id = ((data.get("message") or {}).get("headers") or {}).get("message-id", "")
    message_id = f"<{header_id.strip('<>')}>" if header_id else ""
    status = data.get("delivery-status") or {}
    return Event(
        source=SOURCE,
        key=str(data.get("id") or fingerprint(data)),
        kind=kind,
        bounce=bounce,
        email=data["recipient"],
        occurred_at=unix_time(data["timestamp"]),
        provider_message_id=message_id,  # Mailgun's send API answers with the Message-ID
        message_id=message_id,
        detail=" ".join(str(v) for v in (status.get("code"), data.get("reason"), status.get("description")) if v),
        raw=json.dumps(data),
    )
