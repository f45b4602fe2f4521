"""SendGrid's signed event webhook.

SendGrid signs the timestamp header followed by the exact body with ECDSA
(P-256, SHA-256); the verification key is shown in its settings and set here
as SENDGRID_WEBHOOK_PUBLIC_KEY (base64 DER, as SendGrid shows it, or PEM).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from newsletter.config import ConfigError, Settings
from newsletter.feedback.events import BOUNCED, COMPLAINED, DELIVERED, HARD, SOFT, UNSUBSCRIBED, Event
from newsletter.feedback.webhooks import Inbound, Refused, check_fresh, fingerprint, json_body, parsing, unix_time

SOURCE = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
KINDS = {"delivered": DELIVERED, "bounce": BOUNCED, "spamreport": COMPLAINED,
         "unsubscribe": UNSUBSCRIBED, "group_unsubscribe": UNSUBSCRIBED}


@lru_cache(maxsize=4)
def public_key(setting: str) -> ec.EllipticCurvePublicKey:
    try:
        text = setting.strip()
        key = (serialization.load_pem_public_key(text.encode()) if text.startswith("-----")
               else serialization.load_der_public_key(base64.b64decode(text)))
    except (ValueError, binascii.Error):
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY: not a public key; paste the verification key SendGrid shows") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY: expected an ECDSA key")
    return key


def receive(session: Session, settings: Settings, inbound: Inbound, now: datetime | None = None) -> list[Event]:
    if not settings.sendgrid_webhook_public_key:
        raise Refused("the SendGrid webhook is not configured", 404)
    timestamp = inbound.header(TIMESTAMP_HEADER)
    try:
        signature = base64.b64decode(inbound.header(SIGNATURE_HEADER), validate=True)
        public_key(settings.sendgrid_webhook_public_key).verify(
            signature, timestamp.encode() + inbound.body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise Refused("bad signature") from None
    check_fresh(settings, unix_time(timestamp), now)
    items = json_body(inbound.body, list)
    with parsing("SendGrid event"):
        return [event for item in items if (event := _event(item)) is not None]


def _event(item: dict) -> Event | None:
    kind = KINDS.get(item["event"])
    if kind is None:
        return None  # processed, deferred, dropped, opens, clicks
    bounce = ""
    if kind == BOUNCED:
        # "blocked" is SendGrid's word for a refusal that may pass later.
        bounce = SOFT if item.get("type") == "blocked" else HARD
    return Event(
        source=SOURCE,
        key=str(item.get("sg_event_id") or fingerprint(item)),
        kind=kind,
        bounce=bounce,
        email=item["email"],
        occurred_at=unix_time(item["timestamp"]),
        # The id the send API answered with is what comes before ".filter".
        provider_message_id=str(item.get("sg_message_id", "")).split(".filter")[0],
        message_id=str(item.get("smtp-id", "")),
        detail=" ".join(str(item.get(k, "")) for k in ("status", "reason") if item.get(k)),
        raw=json.dumps(item),
    )
