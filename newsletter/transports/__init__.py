"""Transports: the one way mail leaves, an interface and a small module per provider.

Takes in ``Envelope`` values (a complete message for one recipient, made by
``authoring.message``). Hands back one ``Result`` per envelope: sent, failed
for now (worth a retry) or failed for good. Sending, proofs and sign-up
confirmations all go out this way; SMTP, an outbox folder and each
provider's HTTP API sit behind the same ``Transport.send_many``.
"""

import importlib

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

# TRANSPORT value -> module and class; imported only when chosen (SES needs boto3).
PROVIDERS = {
    "ses": ("ses", "SesTransport"),
    "sendgrid": ("sendgrid", "SendGridTransport"),
    "postmark": ("postmark", "PostmarkTransport"),
    "mailgun": ("mailgun", "MailgunTransport"),
}

__all__ = ["Envelope", "Result", "Transport", "TransportError", "SENT", "TEMPORARY", "PERMANENT", "make_transport"]


def make_transport(settings) -> Transport:
    """The transport the settings name."""
    if settings.transport == "outbox":
        from newsletter.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "smtp":
        from newsletter.transports.smtp import SmtpTransport

        return SmtpTransport.from_settings(settings)
    if settings.transport in PROVIDERS:
        module_name, class_name = PROVIDERS[settings.transport]
        module = importlib.import_module(f"newsletter.transports.{module_name}")
        return getattr(module, class_name).from_settings(settings)
    raise TransportError(f"unknown transport {settings.transport!r}")
