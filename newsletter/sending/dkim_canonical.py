"""DKIM canonicalisation and hashing (RFC 6376, 3.4 and 3.7) of a message in parts.

Takes in a message as ``MessageParts`` (the header block, then the body as
pieces the send's messages share and pieces personal to one recipient) and
hands on what a signature is made of: the body hash, and the SHA-256 of the
signed header fields with the DKIM-Signature header field itself.

The body of a newsletter is the same for every recipient but for a few
personalised bytes, so the shared pieces are canonicalised once per template
(kept while the template is in use) and only the recipient's pieces per
message; SHA-256 then runs over the whole body in C. Of the header block only
the fields a signature names are canonicalised. Every piece ends on a line
break, so canonicalising piece by piece gives what canonicalising the joined
body gives; a body that breaks that (or a message with a bare CR or LF) is
not ours to guess at: ``parse`` answers None and the caller signs it with dkimpy.

The header canonicalisation is always ``relaxed``; the body's is ``relaxed``
or ``simple`` (docs/dkim.md says which we sign with, and why).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

CRLF = b"\r\n"
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_AT_LINE_END = re.compile(rb"[ \t]+\r\n")
_FIELD_START = re.compile(rb"\r\n(?![ \t])")  # a line break that is not folding


# Most fields of a send's messages are the same in each (From, Subject, List-Id,
# Content-Type ...): those are found here, not canonicalised again.
@lru_cache(maxsize=1024)
def relaxed_field(field: bytes) -> tuple[bytes, bytes]:
    """One header field (folded lines, no final CRLF) as relaxed canonicalisation
    writes it: the lower-case name, and ``name:value`` unfolded, each run of
    spaces and tabs one space, none at either end of the value."""
    name, _, value = field.partition(b":")
    name = name.rstrip(b" \t").lower()
    value = value.replace(CRLF, b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name, name + b":" + value.strip(b" ")


def relaxed_lines(data: bytes) -> bytes:
    """Body lines as relaxed canonicalisation writes them: each run of spaces and
    tabs one space, none at a line's end. Lines already so come back as they are."""
    if b"\t" not in data and b"  " not in data and b" \r\n" not in data:
        return data  # most pieces: nothing to change, and no copy made
    return _WSP_AT_LINE_END.sub(CRLF, _WSP_RUN.sub(b" ", data))


def _ends_on_line(pieces: Iterable[bytes]) -> bool:
    return all(not piece or piece.endswith(CRLF) for piece in pieces)


@lru_cache(maxsize=16)
def _shared_canonical(shared: tuple[bytes, ...], relaxed: bool) -> tuple[bytes, ...] | None:
    """The shared pieces canonicalised, once per template (the tuple is the
    template's own, so finding it again costs a hash of a few pointers)."""
    if not _ends_on_line(shared):
        return None
    return tuple(relaxed_lines(piece) for piece in shared) if relaxed else shared


def _without_trailing_empty_lines(pieces: list[bytes]) -> list[bytes]:
    """Empty lines at the end of the body are ignored (RFC 6376, 3.4.3 and 3.4.4).
    Every piece ends on a line break, so a piece of line breaks alone is empty lines."""
    while pieces and _only_line_breaks(pieces[-1]):
        pieces.pop()
    if pieces:
        last = pieces[-1]
        end = len(last)
        while last.endswith(CRLF + CRLF, 0, end):
            end -= 2
        pieces[-1] = last[:end]
    return pieces


def _only_line_breaks(piece: bytes) -> bool:
    # Most pieces show at their first two octets that they hold more than line
    # breaks: the last piece of a body is kilobytes long, not worth copying to ask.
    return not piece or (piece.startswith(CRLF) and not piece.replace(CRLF, b""))


def body_hash(shared: tuple[bytes, ...], personal: tuple[bytes, ...], relaxed: bool) -> bytes | None:
    """The base64 SHA-256 of the canonical body, or None when a piece does not
    end on a line break. A whole body is one personal piece between two empty shared ones."""
    canonical_shared = _shared_canonical(shared, relaxed)
    if canonical_shared is None or len(shared) != len(personal) + 1:
        return None
    # A value fills many slots (a counted link's reference, dozens): each distinct one is looked at once.
    distinct = set(personal)
    if not _ends_on_line(distinct):
        return None
    pieces: list[bytes] = [b""] * len(shared + personal)
    pieces[0::2] = canonical_shared
    if relaxed and any(relaxed_lines(piece) is not piece for piece in distinct):
        pieces[1::2] = [relaxed_lines(piece) for piece in personal]
    else:
        pieces[1::2] = personal
    pieces = _without_trailing_empty_lines(pieces)
    digest = hashlib.sha256(b"".join(pieces))  # one copy costs less than a call per piece
    if not pieces and not relaxed:
        digest.update(CRLF)  # an empty body is one empty line in simple, nothing in relaxed
    return base64.b64encode(digest.digest())


class CanonicalMessage:
    """One message prepared for every key that signs it: its header fields
    parsed once, and its body hashed once per body canonicalisation."""

    def __init__(self, head: bytes, shared: tuple[bytes, ...], personal: tuple[bytes, ...]):
        self.fields = [field for field in _FIELD_START.split(head) if field]
        self.shared = shared
        self.personal = personal
        self._body_hashes: dict[bool, bytes | None] = {}
        self._canonical: list[tuple[bytes, bytes]] | None = None
        self._signed: dict[tuple[bytes, ...], bytes] = {}

    def body_hash(self, relaxed: bool) -> bytes | None:
        if relaxed not in self._body_hashes:
            self._body_hashes[relaxed] = body_hash(self.shared, self.personal, relaxed)
        return self._body_hashes[relaxed]

    def signed_fields(self, names: tuple[bytes, ...]) -> bytes:
        """The relaxed form of the fields ``names`` (lower case, in h= order)
        picks, each name taking the last field of that name not yet taken, as a
        verifier picks them (RFC 6376, 5.4.2); a name with none left picks nothing."""
        if names in self._signed:  # two keys sign the same header fields
            return self._signed[names]
        if self._canonical is None:
            self._canonical = [relaxed_field(field) for field in self.fields]
        left: dict[bytes, list[bytes]] = {}
        for name, line in self._canonical:
            left.setdefault(name, []).append(line)
        out = []
        for name in names:
            found = left.get(name)
            if found:
                out.append(found.pop())
                out.append(CRLF)
        signed = self._signed[names] = b"".join(out)
        return signed


def split_message(message: bytes) -> tuple[bytes, bytes] | None:
    """A whole message as its header block (with the blank line) and body, or
    None for one this module leaves to dkimpy: a bare CR or LF anywhere, no
    blank line after the header, or a body that does not end on a line break."""
    crlfs = message.count(CRLF)
    if message.count(b"\n") != crlfs or message.count(b"\r") != crlfs:
        return None
    end = message.find(CRLF + CRLF)
    if end < 0 or message.startswith(CRLF):
        return None
    head, body = message[:end + 4], message[end + 4:]
    if body and not body.endswith(CRLF):
        return None
    return head, body
