"""What the SMTP transport tests send and how they read the answers: messages
with lines that start with dots and a non-ASCII word, a transport made for a
test server, and the recipients a server took."""

from __future__ import annotations

from newsletter.transports.base import Envelope
from newsletter.transports.smtp import SmtpTransport


def message_bytes(recipient: str) -> bytes:
    return (
        "From: Together We're Better <news@example.org>\r\n"
        f"To: {recipient}\r\n"
        "Subject: Together We're Better - September 2021\r\n"
        f"Message-ID: <{recipient.replace('@', '.')}@news.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Welcome to the September issue.\r\n"
        ".This line starts with a dot and must arrive with exactly one.\r\n"
        "..And this one with two.\r\n"
        ".\r\n"
        "Vaccination clinics at the Café in the Park.\r\n"
    ).encode("utf-8")


def envelopes(count: int, start: int = 1) -> list[Envelope]:
    return [
        Envelope(
            delivery_id=i,
            sender="bounces@example.org",
            recipient=f"reader{i}@example.com",
            message=message_bytes(f"reader{i}@example.com"),
        )
        for i in range(start, start + count)
    ]


def plain_transport(server, **options) -> SmtpTransport:
    options.setdefault("security", "none")
    options.setdefault("timeout", 10)
    return SmtpTransport(server.host, server.port, local_hostname="sender.example.org", **options)


def statuses(results) -> list[str]:
    return [r.status for r in results]


def recipients(server) -> list[str]:
    return sorted(r for m in server.messages for r in m.recipients)


def accepted(server) -> list[str]:
    return sorted(r for m in server.messages if m.accepted for r in m.recipients)


def addresses(numbers) -> list[str]:
    return sorted(f"reader{n}@example.com" for n in numbers)


def as_sunk(message: bytes) -> bytes:
    """A message as smtp-sink writes it to its file: LF line endings."""
    return message.replace(b"\r\n", b"\n")
