"""Transports: the one way mail leaves, an interface and a small module per provider.

Takes in ``Envelope`` values (a complete message for one recipient, made by
``authoring.message``). Hands back one ``Result`` per envelope: sent, failed
for now (worth a retry) or failed for good. Sending, proofs and sign-up
confirmations all go out this way; SMTP, an outbox folder and each
provider's HTTP API sit behind the same ``Transport.send_many``.
"""

import importlib

from newsletter.addresses import local_part_is_ascii

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

# TRANSPORT value -> module and class; imported only when chosen (SES needs boto3 only when made).
PROVIDERS = {
    "ses": ("ses", "SesTransport"),
    "sendgrid": ("sendgrid", "SendGridTransport"),
    "postmark": ("postmark", "PostmarkTransport"),
    "mailgun": ("mailgun", "MailgunTransport"),
}
BUILT_IN = {"outbox": ("outbox", "OutboxTransport"), "smtp": ("smtp", "SmtpTransport")}

__all__ = ["Envelope", "Result", "Transport", "TransportError", "SENT", "TEMPORARY", "PERMANENT", "make_transport",
           "transport_class", "why_never_delivered"]


def transport_class(name: str) -> type[Transport]:
    """The class a TRANSPORT value names."""
    found = BUILT_IN.get(name) or PROVIDERS.get(name)
    if found is None:
        raise TransportError(f"unknown transport {name!r}")
    module_name, class_name = found
    return getattr(importlib.import_module(f"newsletter.transports.{module_name}"), class_name)


def make_transport(settings) -> Transport:
    """The transport the settings name."""
    cls = transport_class(settings.transport)
    if settings.transport == "outbox":
        return cls(settings.outbox_dir)
    return cls.from_settings(settings)


def why_never_delivered(transport: str | Transport, address: str) -> str:
    """Why mail to ``address`` (stored form) can never leave by this transport
    (a TRANSPORT value or a transport); "" when it can. The one rule for
    refusing an address at import and sign-up and for failing a row as
    unsendable at send time."""
    cls = transport if isinstance(transport, Transport) else transport_class(transport)
    if not local_part_is_ascii(address) and not cls.utf8_local_parts:
        return (f"{address} has letters beyond ASCII before the @, and {cls.name} cannot send to such an "
                "address (it has no SMTPUTF8)")
    return ""
