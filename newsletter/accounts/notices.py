"""Short emails to the people of the console: invitations, password resets, approval steps.

They go through the install's transport from the publication's own address,
like a subscriber's confirmation email: one link, no tracking, no issue content.
A notice that cannot be sent is reported to the caller, never lost silently.
"""

from __future__ import annotations

import logging
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Sequence

from newsletter.config import Settings
from newsletter.store.models import PublicationRow, utcnow
from newsletter.store.publications import settings_for
from newsletter.transports import SENT, Envelope, Transport, make_transport

log = logging.getLogger(__name__)


def send_notice(settings: Settings, publication: PublicationRow, recipients: Sequence[str], subject: str, text: str,
                transport: Transport | None = None) -> list[str]:
    """Email each recipient; returns the addresses it could not be sent to (with why)."""
    recipients = sorted(set(recipients))
    if not recipients:
        return []
    envelopes = [_envelope(publication, address, subject, text) for address in recipients]
    own = transport is None
    try:
        # From the publication's address, so through its own transport and account.
        transport = transport or make_transport(settings_for(settings, publication, secrets=True))
        results = transport.send_many(envelopes)
    except Exception as exc:  # noqa: BLE001 - a page says so rather than a traceback
        log.warning("notice %r not sent: %s", subject, exc)
        return [f"{address} ({exc})" for address in recipients]
    finally:
        if own and transport is not None:
            transport.close()
    failed = [f"{a} ({r.error or r.status})" for a, r in zip(recipients, results) if r.status != SENT]
    for failure in failed:
        log.warning("notice %r not sent to %s", subject, failure)
    return failed


def _envelope(publication: PublicationRow, address: str, subject: str, text: str) -> Envelope:
    domain = publication.from_email.rsplit("@", 1)[-1].lower()
    message = EmailMessage()
    message["From"] = Address(publication.from_name, addr_spec=publication.from_email)
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid("console", domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(text)
    return Envelope(delivery_id=0, sender=publication.from_email, recipient=address,
                    message=message.as_bytes(policy=message.policy.clone(linesep="\r\n")),
                    message_id=message["Message-ID"])
