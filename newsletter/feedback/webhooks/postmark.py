"""Postmark webhooks, authenticated with HTTP basic auth.

Postmark signs nothing: the credentials set in its webhook URL
(``https://user:password@host/webhooks/postmark``) are the only proof, so
the endpoint must be served over https. Replays change nothing because every
event has a key and is recorded once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.feedback.events import BOUNCED, COMPLAINED, DELIVERED, HARD, SOFT, UNSUBSCRIBED, Event
from newsletter.feedback.webhooks import Inbound, Malformed, Refused, json_body, parsing

SOURCE = "postmark"
HARD_TYPES = {"HardBounce", "BadEmailAddress"}
SOFT_TYPES = {"SoftBounce", "Transient", "DnsError", "Blocked"}
COMPLAINT_TYPES = {"SpamComplaint", "SpamNotification"}


def receive(session: Session, settings: Settings, inbound: Inbound, now: datetime | None = None) -> list[Event]:
    if not (settings.postmark_webhook_username and settings.postmark_webhook_password):
        raise Refused("the Postmark webhook is not configured", 404)
    check_credentials(settings, inbound.header("Authorization"))
    payload = json_body(inbound.body)
    with parsing("Postmark event"):
        event = _event(payload)
    return [event] if event else []


def check_credentials(settings: Settings, authorization: str) -> None:
    scheme, _, encoded = authorization.partition(" ")
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        username = password = ""
    # Both compared in full whatever the first says, so timing tells nothing.
    user_ok = hmac.compare_digest(username.encode(), settings.postmark_webhook_username.encode())
    password_ok = hmac.compare_digest(password.encode(), settings.postmark_webhook_password.encode())
    if scheme.lower() != "basic" or not (user_ok and password_ok):
        raise Refused("bad credentials", 401)


def _event(p: dict) -> Event | None:
    record = p["RecordType"]
    common = {"source": SOURCE, "provider_message_id": str(p.get("MessageID", "")), "raw": json.dumps(p)}
    if record == "Delivery":
        return Event(key=f"delivery:{p['MessageID']}:{p['Recipient']}", kind=DELIVERED, email=p["Recipient"],
                     occurred_at=_time(p["DeliveredAt"]), detail=p.get("Details", ""), **common)
    if record in ("Bounce", "SpamComplaint"):
        kind, bounce = _bounce_kind(p["Type"])
        if kind is None:
            return None  # auto-replies, subscribe requests, challenge mails
        return Event(key=f"bounce:{p['ID']}", kind=kind, bounce=bounce, email=p["Email"],
                     occurred_at=_time(p["BouncedAt"]), detail=f"{p['Type']}: {p.get('Description', '')}", **common)
    if record == "SubscriptionChange":
        if not p["SuppressSending"]:
            return None  # a reactivation in Postmark never lifts our suppression
        return Event(key=f"subscription:{p['MessageID']}:{p['Recipient']}:{p['ChangedAt']}", kind=UNSUBSCRIBED,
                     email=p["Recipient"], occurred_at=_time(p["ChangedAt"]),
                     detail=p.get("SuppressionReason", ""), **common)
    return None  # opens, clicks


def _bounce_kind(kind: str) -> tuple[str | None, str]:
    if kind in HARD_TYPES:
        return BOUNCED, HARD
    if kind in SOFT_TYPES:
        return BOUNCED, SOFT
    if kind in COMPLAINT_TYPES:
        return COMPLAINED, ""
    return None, ""


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise Malformed("timestamp is not ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
