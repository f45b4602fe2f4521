"""Amazon SES notifications delivered through SNS over HTTPS.

Verified before anything is read: the topic must be one we expect, the
message must be signed with SignatureVersion 2 (RSA with SHA-256) over SNS's
canonical string, by a certificate fetched over https from an SNS host
(``sns.<region>.amazonaws.com``) and cached. A subscription is confirmed by
visiting its SubscribeURL, only when that too is on an SNS host.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.feedback.events import BOUNCED, COMPLAINED, DELIVERED, HARD, SOFT, Event
from newsletter.feedback.webhooks import Inbound, Malformed, Refused, check_fresh, json_body, parsing

SOURCE = "ses"
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields SNS signs, in the order it signs them.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def is_sns_url(url: str) -> bool:
    """True only for https://sns.<region>.amazonaws.com/... with no tricks in the authority."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.username is None
        and port in (None, 443)
        and bool(parts.hostname and SNS_HOST.fullmatch(parts.hostname))
        and "@" not in parts.netloc
    )


def _https_get(url: str) -> bytes:
    response = requests.get(url, timeout=10, allow_redirects=False)
    response.raise_for_status()
    return response.content


class SnsFetcher:
    """Fetches from SNS hosts only; keeps signing certificates once fetched."""

    def __init__(self, get: Callable[[str], bytes] = _https_get):
        self._get = get
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        if not is_sns_url(url):
            raise Refused("signing certificate is not on an SNS host")
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        try:
            certificate = x509.load_pem_x509_certificate(self._get(url))
        except (requests.RequestException, ValueError):
            raise Refused("signing certificate could not be fetched", 400) from None
        with self._lock:
            self._certificates[url] = certificate
        return certificate

    def confirm(self, url: str) -> None:
        if not is_sns_url(url):
            raise Refused("SubscribeURL is not on an SNS host")
        try:
            self._get(url)
        except requests.RequestException:
            # Not a bad request: SNS sends the confirmation again later.
            raise Refused("the subscription could not be confirmed; SNS will retry", 502) from None


DEFAULT_FETCHER = SnsFetcher()


def receive(session: Session, settings: Settings, inbound: Inbound, now: datetime | None = None,
            fetcher: SnsFetcher | None = None) -> list[Event]:
    envelope = json_body(inbound.body)
    kind = envelope.get("Type")
    if kind not in SIGNED_FIELDS:
        raise Malformed("not an SNS message")
    if not settings.sns_topic_arns or envelope.get("TopicArn") not in settings.sns_topic_arns:
        raise Refused("topic not accepted")
    verify(envelope, fetcher or DEFAULT_FETCHER, now)
    check_fresh(settings, _timestamp(envelope["Timestamp"]), now)
    if kind == "SubscriptionConfirmation":
        (fetcher or DEFAULT_FETCHER).confirm(envelope.get("SubscribeURL", ""))
        return []
    if kind == "UnsubscribeConfirmation":
        return []
    with parsing("SES notification"):
        return ses_events(json.loads(envelope["Message"]), envelope["MessageId"], envelope["Message"])


def verify(envelope: dict, fetcher: SnsFetcher, now: datetime | None = None) -> None:
    if envelope.get("SignatureVersion") != "2":
        raise Refused("only SNS SignatureVersion 2 (SHA-256) is accepted; set it on the topic")
    certificate = fetcher.certificate(str(envelope.get("SigningCertURL", "")))
    now = now or datetime.now(timezone.utc)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Refused("signing certificate is not valid now")
    try:
        signature = base64.b64decode(str(envelope.get("Signature", "")), validate=True)
        certificate.public_key().verify(signature, canonical_string(envelope), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        raise Refused("bad signature") from None


def canonical_string(envelope: dict) -> bytes:
    """What SNS signs: each signed field present, as name newline value newline."""
    lines = []
    for name in SIGNED_FIELDS[envelope["Type"]]:
        if name in envelope and envelope[name] is not None:
            lines += [name, str(envelope[name])]
    return ("\n".join(lines) + "\n").encode("utf-8")


def ses_events(message: dict, sns_message_id: str, raw: str) -> list[Event]:
    """SES notifications (notificationType) and event publishing (eventType) alike."""
    kind = message.get("notificationType") or message.get("eventType")
    mail = message.get("mail") or {}
    common = {
        "source": SOURCE,
        "provider_message_id": mail.get("messageId", ""),
        "message_id": _header_message_id(mail),
        "raw": raw,
    }
    if kind == "Bounce":
        bounce = message["bounce"]
        severity = HARD if bounce["bounceType"] == "Permanent" else SOFT
        return [
            Event(key=f"{sns_message_id}:{r['emailAddress']}", kind=BOUNCED, bounce=severity, email=r["emailAddress"],
                  occurred_at=_timestamp(bounce["timestamp"]),
                  detail=" ".join(filter(None, (bounce.get("bounceSubType"), r.get("status"), r.get("diagnosticCode")))),
                  **common)
            for r in bounce["bouncedRecipients"]
        ]
    if kind == "Complaint":
        complaint = message["complaint"]
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        return [
            Event(key=f"{sns_message_id}:{r['emailAddress']}", kind=COMPLAINED, email=r["emailAddress"],
                  occurred_at=_timestamp(complaint["timestamp"]),
                  detail=complaint.get("complaintFeedbackType") or "", **common)
            for r in complaint["complainedRecipients"]
        ]
    if kind == "Delivery":
        delivery = message["delivery"]
        return [
            Event(key=f"{sns_message_id}:{address}", kind=DELIVERED, email=address,
                  occurred_at=_timestamp(delivery["timestamp"]), detail=delivery.get("smtpResponse", ""), **common)
            for address in delivery["recipients"]
        ]
    return []  # sends, opens, clicks, delays: not events we act on


def _header_message_id(mail: dict) -> str:
    found = (mail.get("commonHeaders") or {}).get("messageId")
    if found:
        return found
    for header in mail.get("headers") or ():
        if header.get("name", "").lower() == "message-id":
            return header.get("value", "")
    return ""


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise Malformed("timestamp is not ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
