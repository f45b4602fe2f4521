"""Bounces for SMTP setups: the bounce mailbox reader.

Each message's envelope sender is a VERP return path naming its ledger row
(``sending.return_path``). The mailbox that receives those addresses is read
from a Maildir folder or over IMAP:

- delivery status notifications (RFC 3464): Action failed with Status 5.x.x
  is a hard bounce, 4.x.x a soft one; 5.7.x refuses the sender or the content
  (authentication, reputation, policy), not the address, so it is recorded as
  blocked and never suppresses the person; "delayed" is only a notice;
- feedback reports (RFC 5965, ARF): a complaint.

Anyone can send mail to the bounce mailbox, so a report counts only when a
valid VERP tag ties it to a ledger row, and it is applied to the address that
row was sent to, whatever the report says. Anything else in the mailbox
(auto-replies, people writing back, reports we cannot tie) is left alone,
marked as read.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import mailbox
import re
import ssl
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import InputError, NewsletterError, Problem
from newsletter.store.models import Delivery
from newsletter.sending.return_path import delivery_from_verp
from newsletter.feedback.events import BLOCKED, BOUNCED, COMPLAINED, HARD, SOFT, Event, EventReport, record_events

SOURCE = "mailbox"
_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")


# --- reading one message --------------------------------------------------------------


def events_in(settings: Settings, raw: bytes) -> list[Event]:
    """The bounce or complaint events one received message reports (often none)."""
    message = message_from_bytes(raw, policy=policy.compat32)
    if message.get_content_type() != "multipart/report":
        return []
    report_type = (message.get_param("report-type") or "").lower()
    delivery_id = _verp_delivery(settings, message)
    key_base = message.get("Message-ID") or hashlib.sha256(raw).hexdigest()
    common = {"source": SOURCE, "delivery_id": delivery_id, "message_id": _original_message_id(message),
              "occurred_at": _date(message), "raw": raw.decode("utf-8", "replace")}
    if report_type == "delivery-status":
        found = _dsn_events(message, key_base, common)
    elif report_type == "feedback-report":
        found = _arf_events(settings, message, key_base, common)
    else:
        found = []
    return [event for event in found if event.delivery_id is not None]  # see the module's notes


def _dsn_events(message: Message, key_base: str, common: dict) -> list[Event]:
    status_part = _part(message, "message/delivery-status")
    if status_part is None:
        return []
    # The first block is about the message; each further one about a recipient.
    blocks = status_part.get_payload()[1:] if status_part.is_multipart() else []
    found = []
    for block in blocks:
        action = (block.get("Action") or "").strip().lower()
        status = _STATUS.search(block.get("Status") or "")
        recipient = _address_of(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        if action != "failed" or not status or not recipient or status.group(1) == "2":
            continue  # delayed, delivered, relayed, expanded: not bounces
        diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
        found.append(Event(key=f"{key_base}:{recipient}", kind=BOUNCED, bounce=_bounce_of(status.group(0)),
                           email=recipient, detail=f"{status.group(0)} {diagnostic}".strip(), **common))
    return found


def _bounce_of(status: str) -> str:
    if status.startswith("5.7."):
        return BLOCKED
    return HARD if status.startswith("5") else SOFT


def _arf_events(settings: Settings, message: Message, key_base: str, common: dict) -> list[Event]:
    report = _part(message, "message/feedback-report")
    if report is None:
        return []
    # The report's fields are parsed as a message of their own.
    fields = report.get_payload()[0] if report.is_multipart() else report
    feedback_type = (fields.get("Feedback-Type") or "").strip().lower()
    if feedback_type not in ("abuse", "fraud", "virus", "other", ""):
        return []  # auth-failure, not-spam: not a person's complaint
    recipient = _address_of(fields.get("Original-Rcpt-To") or "") or _original_to(message)
    if not recipient:
        return []
    if common["delivery_id"] is None:
        # Feedback loops send to their own address; the original sender still names the row.
        common = {**common, "delivery_id": delivery_from_verp(settings, fields.get("Original-Mail-From") or "")}
    return [Event(key=f"{key_base}:{recipient}", kind=COMPLAINED, email=recipient, detail=feedback_type or "abuse", **common)]


def _verp_delivery(settings: Settings, message: Message) -> int | None:
    for header in _RECIPIENT_HEADERS:
        for value in message.get_all(header) or ():
            found = delivery_from_verp(settings, value)
            if found is not None:
                return found
    return None


def _part(message: Message, content_type: str) -> Message | None:
    return next((p for p in message.walk() if p.get_content_type() == content_type), None)


def _original(message: Message) -> Message | None:
    part = _part(message, "message/rfc822")
    if part is not None and part.is_multipart():
        return part.get_payload()[0]
    headers = _part(message, "text/rfc822-headers")
    if headers is not None:
        return message_from_bytes(headers.get_payload(decode=True) or b"", policy=policy.compat32)
    return None


def _original_message_id(message: Message) -> str:
    original = _original(message)
    return (original.get("Message-ID") or "").strip() if original is not None else ""


def _original_to(message: Message) -> str:
    original = _original(message)
    addresses = getaddresses(original.get_all("To") or []) if original is not None else []
    return addresses[0][1] if len(addresses) == 1 else ""


def _address_of(field: str) -> str:
    # "rfc822; someone@example.com"
    _, _, address = field.partition(";")
    return (address or field).strip().strip("<>")


def _date(message: Message) -> datetime:
    try:
        parsed = parsedate_to_datetime(message.get("Date") or "")
    except (TypeError, ValueError):
        return datetime.now(timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --- reading a mailbox ------------------------------------------------------------------


@dataclass
class MailboxReport:
    messages: int = 0
    reports: int = 0  # DSNs and feedback reports among them
    events: EventReport | None = None


def read_maildir(session: Session, settings: Settings, path: Path) -> MailboxReport:
    """Process every unread message in a Maildir, then mark it read ("S")."""
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise InputError(Problem(str(path), "is not a Maildir folder (no cur/ and new/ in it)", "give the folder the bounces are delivered to"))
    folder = mailbox.Maildir(path, factory=None, create=False)
    report = MailboxReport(events=EventReport())
    seen = []
    for key, message in list(folder.iteritems()):
        if "S" in message.get_flags():
            continue
        _process(session, settings, message.as_bytes(), report)
        seen.append(key)
    session.commit()  # the events are safe before the messages are marked read
    for key in seen:
        message = folder[key]
        message.set_subdir("cur")
        message.add_flag("S")
        folder[key] = message
    return report


def read_imap(session: Session, settings: Settings, url: str,
              ssl_context: ssl.SSLContext | None = None) -> MailboxReport:
    """Process unseen messages of ``imaps://user:password@host[:port]/FOLDER``, then flag them seen.

    The server's certificate is verified against the system's trusted CAs
    (or ``ssl_context``'s) before the password is sent.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "imap") or not parts.hostname or not parts.username:
        raise InputError(Problem("--imap", f"{url!r} is not an IMAP URL", "use imaps://user:password@host/INBOX"))
    connection = _connect(parts, ssl_context or ssl.create_default_context())
    report = MailboxReport(events=EventReport())
    try:
        _open_folder(connection, parts)
        _, found = connection.uid("SEARCH", None, "UNSEEN")
        uids = found[0].split() if found and found[0] else []
        for uid in uids:
            _, data = connection.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in data if isinstance(item, tuple)), b"")
            _process(session, settings, raw, report)
        session.commit()  # the events are safe before the messages are flagged seen
        for uid in uids:
            connection.uid("STORE", uid, "+FLAGS", r"(\Seen)")
    finally:
        connection.logout()
    return report


def _connect(parts, context: ssl.SSLContext) -> imaplib.IMAP4:
    where = f"{parts.hostname}:{parts.port or (993 if parts.scheme == 'imaps' else 143)}"
    try:
        if parts.scheme == "imaps":
            return imaplib.IMAP4_SSL(parts.hostname, parts.port or 993, ssl_context=context, timeout=30)
        connection = imaplib.IMAP4(parts.hostname, parts.port or 143, timeout=30)
        try:
            connection.starttls(ssl_context=context)  # never a password in clear
        except BaseException:
            with contextlib.suppress(OSError):  # the failed handshake may have closed it
                connection.shutdown()
            raise
        return connection
    except ssl.SSLCertVerificationError as exc:
        raise NewsletterError(f"the IMAP server {where} has a certificate we cannot trust ({exc.verify_message}); "
                              "nothing was sent to it") from None
    except (OSError, imaplib.IMAP4.error) as exc:
        raise NewsletterError(f"could not open a TLS connection to the IMAP server {where}: {exc}") from None


def _open_folder(connection: imaplib.IMAP4, parts) -> None:
    try:
        connection.login(unquote(parts.username), unquote(parts.password or ""))
    except imaplib.IMAP4.error:
        raise InputError(Problem("--imap", f"the IMAP server refused user {unquote(parts.username)!r} and its password",
                                 "check the user name and password in the URL")) from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    status, _ = connection.select(_quoted(folder))
    if status != "OK":
        raise InputError(Problem("--imap", f"there is no folder {folder!r} on the IMAP server",
                                 "give the folder the bounces are delivered to, e.g. /INBOX"))


def _quoted(folder: str) -> str:
    # imaplib sends a mailbox name as it is: one with a space needs quotes.
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _process(session: Session, settings: Settings, raw: bytes, report: MailboxReport) -> None:
    report.messages += 1
    found = []
    for event in events_in(settings, raw):
        delivery = session.get(Delivery, event.delivery_id)
        if delivery is not None:
            found.append(replace(event, email=delivery.email))
    if found:
        report.reports += 1
        report.events.add(record_events(session, settings, found))
