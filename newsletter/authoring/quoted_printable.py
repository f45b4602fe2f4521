"""A message's bodies as quoted-printable pieces, encoded once per template.

Every piece ends on a line break (a soft one, ``=\\r\\n``, if need be) and no
line starts with a dot, so a template's pieces and a recipient's encoded
values simply join into valid quoted-printable with lines under 77 octets,
each piece can be DKIM-canonicalised on its own, and SMTP has nothing to
dot-stuff.
"""

from __future__ import annotations

import binascii
import html
from dataclasses import dataclass

from newsletter.authoring import placeholders
from newsletter.errors import InputError, Problem

CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"
_QP_LINE_LENGTH = 76  # octets, the soft break's "=" included (RFC 2045, 6.7)

TEXT_PART_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)
HTML_PART_HEADERS = (
    b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


@dataclass(frozen=True)
class EncodedPart:
    """A body as quoted-printable pieces: statics[0], names[0], statics[1], ...

    Every piece ends on a line break, so the pieces and the recipient's
    encoded values join into valid quoted-printable with lines under 77 octets
    (and each can be DKIM-canonicalised on its own).
    """

    statics: tuple[bytes, ...]
    names: tuple[str, ...]

    @classmethod
    def compile(cls, body: str, field_name: str) -> EncodedPart:
        pieces = placeholders.PATTERN.split(body)
        names = tuple(pieces[1::2])
        unknown = sorted(set(names) - set(placeholders.NAMES))
        if unknown:
            raise InputError(Problem(
                f"field {field_name}",
                "unknown placeholder " + ", ".join(f"%%{n}%%" for n in unknown),
                "use only " + ", ".join(f"%%{n}%%" for n in placeholders.NAMES),
            ))
        return cls(tuple(qp_piece(p) for p in pieces[0::2]), names)


def canonical_body(body: str) -> str:
    # One line ending, and a final line break: what email.message makes too.
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def qp_piece(text: str) -> bytes:
    """Quoted-printable lines ending on a line break, none of them starting with a dot."""
    if not text:
        return b""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", CRLF)
    return _no_line_starts_with_dot(encoded if encoded.endswith(CRLF) else encoded + _SOFT_BREAK)


def _no_line_starts_with_dot(encoded: bytes) -> bytes:
    """Each line that starts with "." starts with its encoding "=2E" instead (any
    octet may be encoded: RFC 2045, 6.7): the same text to a reader, and nothing
    for SMTP to dot-stuff, so the transport need not look for such lines in
    every message (``Envelope.dot_free``). A line that would grow past 76 octets gives
    its dot a line of its own, ended by a soft break."""
    if not encoded.startswith(b".") and b"\n." not in encoded:
        return encoded
    out = []
    for line in encoded.split(CRLF):
        while line.startswith(b"."):
            if len(line) + 2 <= _QP_LINE_LENGTH:
                line = b"=2E" + line[1:]
                break
            out.append(b"=2E=")
            line = line[1:]
        out.append(line)
    return CRLF.join(out)


def qp_value(value: str, escape_html: bool) -> bytes:
    if escape_html:
        value = html.escape(value, quote=True)
    return qp_piece(value)
