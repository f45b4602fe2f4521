"""Ways of handing messages over: one interface, a small module per provider."""

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

__all__ = ["Envelope", "Result", "Transport", "TransportError", "SENT", "TEMPORARY", "PERMANENT", "make_transport"]


def make_transport(settings) -> Transport:
    """The transport the settings name."""
    if settings.transport == "outbox":
        from newsletter.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "smtp":
        from newsletter.transports.smtp import SmtpTransport

        return SmtpTransport.from_settings(settings)
    raise TransportError(f"unknown transport {settings.transport!r}")
