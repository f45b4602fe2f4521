"""The bytes of one SMTP transaction: the command group of a message, its DATA
or BDAT payload, and writing and reading them on a session's socket so that,
when the line breaks, what went out says whether the server may have taken
the message."""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass, field

from newsletter.transports.base import Envelope, Result
from newsletter.transports.smtp.replies import reply_text

# A line break or angle bracket in an address would end or bend the command.
_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass
class _InFlight:
    """A message whose commands went out."""

    index: int
    envelope: Envelope
    kinds: tuple[str, ...]  # the commands of its group: ("RSET",) "MAIL", "RCPT", "DATA" or "BDAT"
    commands: tuple[bytes, ...]
    # What follows: with DATA, after the 354, the message and its final dot; with
    # BDAT, right after its command, the message itself (no copy of it is made).
    data: bytes = b""
    verdict: Result | None = None  # decided before the final reply (a server that said 354 anyway)
    written: bool = False  # streamed (BDAT): all of its group went out
    replies: list[tuple[int, bytes]] = field(default_factory=list)  # streamed: the replies read so far


class _Broken(Exception):
    """The line broke; ``after_dot``: once the waiting message's final dot had gone out."""

    def __init__(self, cause: Exception, after_dot: bool = False):
        super().__init__(str(cause) or type(cause).__name__)
        self.after_dot = after_dot


class _OutOfTurn(Exception):
    def __init__(self, kind: str, code: int, text: bytes):
        super().__init__(f"answers out of turn ({reply_text(code, text)} to {kind})")


def _group(smtp: smtplib.SMTP, envelope: Envelope, bdat_size: int | None = None) -> tuple[bytes, ...]:
    """MAIL, RCPT and DATA for one message, with the parameters the server takes;
    with ``bdat_size``, MAIL, RCPT and the BDAT of a message of that size, sent whole."""
    options = []
    if smtp.has_extn("size"):
        options.append(f"SIZE={len(envelope.message)}")
    if smtp.has_extn("8bitmime") and not envelope.message.isascii():
        options.append("BODY=8BITMIME")
    if not (envelope.sender + envelope.recipient).isascii():
        options.append("SMTPUTF8")
    mail = " ".join([f"MAIL FROM:<{envelope.sender}>"] + options)
    last = b"DATA\r\n" if bdat_size is None else b"BDAT %d LAST\r\n" % bdat_size
    return f"{mail}\r\n".encode(), f"RCPT TO:<{envelope.recipient}>\r\n".encode(), last


def _bdat_payload(message: bytes) -> bytes:
    """The message as one BDAT chunk (RFC 3030): sent as it is, no dot-stuffing, no final dot."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"  # as DATA would end it


def _address_problem(smtp: smtplib.SMTP, envelope: Envelope) -> str | None:
    addresses = envelope.sender + envelope.recipient
    if _UNSAFE_IN_ADDRESS.search(addresses):
        return "the address holds a line break, a control character or an angle bracket"
    if not addresses.isascii() and not smtp.has_extn("smtputf8"):
        return (f"unsendable: {envelope.recipient} has a local part beyond ASCII and the server does not "
                "offer SMTPUTF8: no message can reach it this way")
    return None


def _write(smtp: smtplib.SMTP, data: bytes, dot_end: int = 0) -> None:
    """Send all of ``data``, whose first ``dot_end`` bytes end with a message's final dot.

    Not sendall(): when the line breaks, what went out decides whether the
    server can have taken the message.
    """
    sock = smtp.sock
    if sock is None:
        raise _Broken(ConnectionError("not connected"))
    view, sent = memoryview(data), 0
    try:
        while sent < len(view):
            sent += sock.send(view[sent:])
    except OSError as exc:
        raise _Broken(exc, after_dot=0 < dot_end <= sent) from exc


def _read(smtp: smtplib.SMTP, kind: str) -> tuple[int, bytes]:
    """The next reply, which must be one that can answer ``kind``."""
    try:
        code, text = smtp.getreply()
    except (smtplib.SMTPException, OSError) as exc:
        raise _Broken(exc) from exc
    fits = code == 354 or code // 100 in (4, 5) if kind == "DATA" else code // 100 in (2, 4, 5)
    if not fits:
        raise _OutOfTurn(kind, code, text)
    return code, text


def _goes_on(kind: str, code: int) -> bool:
    """Whether the next command of the group may follow this reply."""
    if code == 421:
        return False
    return code == 354 if kind == "DATA" else code // 100 == 2 or kind == "RSET"


def _dot_stuffed(message: bytes, dot_free: bool = False) -> bytes:
    """The DATA payload: leading dots doubled, ended by a lone dot (RFC 5321 4.5.2).
    ``dot_free``: the builder made sure no line starts with a dot (Envelope.dot_free)."""
    ending = b".\r\n" if message.endswith(b"\r\n") else b"\r\n.\r\n"
    if dot_free:
        return message + ending
    # A newsletter's 60-70 KB hold a handful of lines that start with a dot.
    # Finding them is a scan for the literal (about 35 µs of CPU for the
    # sample's 75 KiB); neither re.sub(rb"(?m)^\.", ...) nor
    # bytes.replace(b"\n.", b"\n..") is as fast (about 100 µs: CPython counts
    # the matches the slow way first), and each made a copy of the message
    # besides. One join builds the payload.
    pieces, start = [b"."] if message.startswith(b".") else [], 0
    for match in _LINE_STARTING_WITH_DOT.finditer(message):
        end = match.start() + 1  # after the line feed: the dot begins the next piece
        pieces += (message[start:end], b".")
        start = end
    pieces.append(message[start:] if start else message)
    pieces.append(ending)
    return b"".join(pieces)


_LINE_STARTING_WITH_DOT = re.compile(rb"\n\.")
