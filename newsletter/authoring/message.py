"""Each recipient's complete message, built fast from an issue encoded once.

A ``MessageTemplate`` is made once per send. It splits the compiled HTML and
text at their placeholders and encodes every static piece to quoted-printable
once; each piece ends on a line break (a soft one, ``=\\r\\n``, if need be), so
pieces and per-recipient values can simply be joined. Building a message then
costs a few small encodes and one join instead of a trip through
``email.message`` (about ten times slower; ``build_reference`` keeps that
obvious way as the yardstick the tests compare against).

Every value that goes into a header is checked (``header_checks.py``): a line
break, raw or hidden in an RFC 2047 encoded word, is refused with an
``InputError`` naming the field, so a subscriber's name can never add a header
(a Bcc, say) to a message. The bodies are encoded by ``quoted_printable.py``.

A recipient's address goes out in its wire form (``addresses.wire_address``:
the domain in IDNA ASCII). A local part that is not ASCII goes into the To
header as UTF-8 (RFC 6532), for a transport that can carry it (SMTPUTF8); an
address that cannot go into a header at all raises ``UnsendableAddress``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from email import policy as email_policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from newsletter.authoring import placeholders
from newsletter.authoring.header_checks import check_recipient, check_template
from newsletter.authoring.quoted_printable import (
    CRLF,
    HTML_PART_HEADERS,
    TEXT_PART_HEADERS,
    EncodedPart,
    canonical_body,
    qp_value,
)

# The word a greeting uses when we do not know the subscriber's name.
GREETING_FALLBACK = "reader"
PROOF_PREFIX = "[PROOF] "

_POLICY = email_policy.SMTP

# A display name that needs neither quotes nor encoding: atext words.
_MAX_UNFOLDED_NAME = 200  # longer names are folded, to keep To under 998 octets
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/?^_`{|}~-]+)*")


@dataclass(frozen=True)
class Recipient:
    """One person's values for one message."""

    email: str
    name: str
    message_id: str  # from make_message_id, so a retry reuses it
    unsubscribe_url: str
    preferences_url: str = ""
    web_url: str = ""
    click_ref: str = ""  # authoring/counted_links.py: never an id or address of the person in aggregate mode


@dataclass(frozen=True)
class Envelope:
    """One complete message for one recipient, as a transport takes it."""

    delivery_id: int  # the ledger row this message is for
    sender: str  # the envelope sender (MAIL FROM / return path)
    recipient: str
    message: bytes  # the complete RFC 5322 message, CRLF line endings
    message_id: str = ""
    # No line of ``message`` starts with ".": SMTP's DATA carries it as it is,
    # unscanned. Set only by MessageTemplate.envelope, which makes it so.
    dot_free: bool = False
    # What the message was built from, for provider APIs that take the issue
    # once per call and each recipient's values (SendGrid, Mailgun, Postmark).
    # Set by MessageTemplate.envelope; transports that send the bytes ignore them.
    template: MessageTemplate | None = field(default=None, compare=False, repr=False)
    person: Recipient | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MessageParts:
    """One recipient's message as the pieces it is joined from.

    ``head`` is the header fields and the blank line after them; the body is
    ``shared[0]``, ``personal[0]``, ``shared[1]``, ... ``shared[-1]``. The
    shared pieces are the same objects in every message of one template, the
    personal ones are the recipient's few encoded values, and every piece is
    empty or ends on a line break (``=\\r\\n`` at worst), so each can be
    canonicalised on its own.
    """

    head: bytes
    shared: tuple[bytes, ...]
    personal: tuple[bytes, ...]

    def message(self, before: bytes = b"") -> bytes:
        """The message, with ``before`` (header fields, such as DKIM signatures) in front: one join, one copy."""
        pieces: list[bytes] = [b""] * (2 * len(self.personal) + 3)
        pieces[0], pieces[1] = before, self.head
        pieces[2::2] = self.shared
        pieces[3::2] = self.personal
        return b"".join(pieces)


def make_message_id(domain: str, send_id: int, delivery_id: int, install: str = "") -> str:
    """The Message-ID of one ledger row: unique per delivery, the same on retry.

    ``install`` tells apart installs that send from the same domain (staging
    and production, say), whose send and delivery numbers repeat: a mailbox
    provider may silently drop a message whose Message-ID it already holds.
    """
    tag = f".{install}" if install else ""
    return f"<nl.{send_id}.{delivery_id}{tag}@{domain}>"


def make_list_id(list_name: str, list_slug: str, domain: str) -> str:
    """A List-Id value (RFC 2919) as it goes on the wire: ``Name <slug.domain>``, ASCII.

    The name is an RFC 5322 phrase, made by the email library: quoted when it
    holds specials such as ``<`` or ``"``, and RFC 2047-encoded as a whole when
    it is not ASCII (specials included), so no reader can take part of the
    name for the id.
    """
    list_id = f"{list_slug}.{domain}"
    if list_name.isascii():
        return formataddr((list_name, list_id))
    words = Header(list_name, "utf-8", header_name="List-Id").encode(linesep="\n").split()
    return f"{' '.join(words)} <{list_id}>"


def publication_template(
    publication, *, subject: str, html: str, text: str, list_name: str = "", list_slug: str = "",
    feedback_id: str = "", subject_prefix: str = "", list_id_domain: str = "",
) -> "MessageTemplate":
    """A MessageTemplate for an issue of ``publication``: an ``issue.Publication``
    or a stored ``PublicationRow`` (they share these fields). The list defaults
    to the publication itself; List-Id ends in ``list_id_domain``, by default
    the From address's domain."""
    domain = publication.from_email.rsplit("@", 1)[-1].lower()
    return MessageTemplate(
        subject=subject,
        html=html,
        text=text,
        from_name=publication.from_name,
        from_email=publication.from_email,
        reply_to=publication.reply_to,
        domain=domain,
        list_id=make_list_id(list_name or publication.name, list_slug or publication.slug, list_id_domain or domain),
        feedback_id=feedback_id,
        return_path=publication.from_email,
        subject_prefix=subject_prefix,
    )


@dataclass(frozen=True)
class MessageTemplate:
    """One send's messages: everything but the recipient, encoded once."""

    subject: str
    html: str  # compiled, with placeholders
    text: str  # with placeholders
    from_name: str
    from_email: str
    reply_to: str  # "" for none
    domain: str  # the publication's, for Message-ID
    list_id: str  # see make_list_id
    feedback_id: str  # "" for none
    return_path: str  # the envelope sender
    subject_prefix: str = ""  # PROOF_PREFIX on proofs
    unsubscribe_mailto: str = ""  # also offer unsubscribing by email to this address

    _encoded: _EncodedTemplate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_template(self)
        # Frozen, so the encoded pieces can never drift from the fields they came from.
        object.__setattr__(self, "_encoded", _EncodedTemplate.of(self))

    @property
    def size_hint(self) -> int:
        """About how many bytes each message is: all but the recipient's header values and placeholders."""
        e = self._encoded
        return len(e.from_line) + len(e.reply_to_and_subject) + len(e.tail_headers) + sum(map(len, e.shared))

    @property
    def full_subject(self) -> str:
        return self.subject_prefix + self.subject

    def list_unsubscribe(self, unsubscribe_url: str) -> str:
        value = f"<{unsubscribe_url}>"
        if self.unsubscribe_mailto:
            value += f", <mailto:{self.unsubscribe_mailto}?subject=unsubscribe>"
        return value

    def build(self, recipient: Recipient) -> bytes:
        """The recipient's complete message: CRLF line endings, ready for SMTP."""
        return self.parts(recipient).message()

    def parts(self, recipient: Recipient) -> MessageParts:
        """The recipient's message as the pieces it is joined from: what a DKIM
        signer takes, to canonicalise the pieces every message shares only once."""
        return self._parts(recipient, *check_recipient(recipient))

    def _parts(self, recipient: Recipient, name: str, address: str) -> MessageParts:
        values = _placeholder_values(recipient, name)
        e = self._encoded
        head = b"".join((
            e.from_line,
            recipient_header(name, address),
            e.reply_to_and_subject,
            _DATE_LINE(),
            b"Message-ID: ", recipient.message_id.encode("ascii"), CRLF,
            b"MIME-Version: 1.0\r\n",
            b"List-Unsubscribe: ", self.list_unsubscribe(recipient.unsubscribe_url).encode("ascii"), CRLF,
            e.tail_headers,
        ))
        return MessageParts(head, e.shared, e.personal(values))

    def envelope(self, delivery_id: int, recipient: Recipient,
                 sign: Callable[[MessageParts], bytes] | None = None) -> Envelope:
        """What a transport takes for this recipient; ``sign`` (a DKIM signer's
        ``sign_parts``) makes the signed message from its parts."""
        name, address = check_recipient(recipient)
        parts = self._parts(recipient, name, address)
        return Envelope(
            delivery_id=delivery_id,
            sender=self.return_path,
            recipient=address,
            message=sign(parts) if sign is not None else parts.message(),
            message_id=recipient.message_id,
            # The body's pieces never start a line with a dot (quoted_printable.qp_piece), nor do
            # the header fields, whose lines start with a name or folding space;
            # the head is looked at all the same, being the recipient's.
            dot_free=b"\n." not in parts.head,
            template=self,
            person=recipient,
        )

    # For provider APIs that personalise a batch themselves (transports/http.py).
    def bodies(self) -> tuple[str, str]:
        """The text and HTML with their placeholders, line endings as every message has them."""
        return canonical_body(self.text), canonical_body(self.html)

    def values_for(self, recipient: Recipient) -> tuple[str, dict[str, str]]:
        """The recipient's name as shown and placeholder values, checked as build checks them."""
        name = check_recipient(recipient)[0]
        return name, _placeholder_values(recipient, name)


def build_reference(template: MessageTemplate, recipient: Recipient) -> bytes:
    """The same message made the slow, obvious way with ``email.message``.

    Kept as the yardstick for ``MessageTemplate.build`` in tests and benchmarks.
    """
    name, address = check_recipient(recipient)
    values = _placeholder_values(recipient, name)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(template.from_name, addr_spec=template.from_email)
    msg["To"] = Address(name, addr_spec=address)  # an ASCII local part only: email.headerregistry refuses others
    if template.reply_to:
        msg["Reply-To"] = template.reply_to
    msg["Subject"] = template.full_subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = recipient.message_id
    msg["MIME-Version"] = "1.0"
    msg["List-Unsubscribe"] = template.list_unsubscribe(recipient.unsubscribe_url)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = _WireHeader("List-Id", template.list_id)
    if template.feedback_id:
        msg["Feedback-ID"] = template.feedback_id
    msg["Precedence"] = "bulk"
    text = placeholders.fill(template.text, values, escape_html=False)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    html_body = placeholders.fill(template.html, values, escape_html=True)
    msg.add_alternative(html_body, subtype="html", charset="utf-8", cte="quoted-printable")
    return bytes(msg)


@dataclass(frozen=True)
class _EncodedTemplate:
    """What every message of a template shares, as bytes ready to join."""

    from_line: bytes
    reply_to_and_subject: bytes
    tail_headers: bytes  # List-Unsubscribe-Post ... Content-Type and the blank line
    # The body: shared[0], a value, shared[1], ...; slots says which value
    # goes between (escaped for HTML or not, the placeholder's name).
    shared: tuple[bytes, ...]
    slots: tuple[tuple[bool, str], ...]
    # Each distinct slot is encoded once per message, then laid out in slot order.
    _distinct: tuple[tuple[bool, str], ...] = field(init=False, repr=False, compare=False)
    _lay_out: Callable[[list[bytes]], tuple[bytes, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        distinct, lay_out = _slot_plan(self.slots)
        object.__setattr__(self, "_distinct", distinct)
        object.__setattr__(self, "_lay_out", lay_out)

    @classmethod
    def of(cls, t: MessageTemplate) -> _EncodedTemplate:
        # "=_" never occurs in quoted-printable, so one boundary serves every message.
        boundary = b"=_nl_" + secrets.token_hex(12).encode()
        reply_to = _header_line("Reply-To", t.reply_to) if t.reply_to else b""
        text = EncodedPart.compile(canonical_body(t.text), "text")
        html = EncodedPart.compile(canonical_body(t.html), "html")
        shared, slots = [b"--" + boundary + CRLF + TEXT_PART_HEADERS + text.statics[0]], []
        for escape_html, part, after in (
            (False, text, CRLF + b"--" + boundary + CRLF + HTML_PART_HEADERS),
            (True, html, CRLF + b"--" + boundary + b"--" + CRLF),
        ):
            for name, static in zip(part.names, part.statics[1:]):
                slots.append((escape_html, name))
                shared.append(static)
            shared[-1] += after
            if part is text:
                shared[-1] += html.statics[0]
        return cls(
            from_line=_header_line("From", str(Address(t.from_name, addr_spec=t.from_email))),
            reply_to_and_subject=reply_to + _header_line("Subject", t.full_subject),
            tail_headers=_static_tail(t, boundary),
            shared=tuple(shared),
            slots=tuple(slots),
        )

    def personal(self, values: dict[str, str]) -> tuple[bytes, ...]:
        """The recipient's encoded values, one per slot: each distinct slot encoded once."""
        return self._lay_out([qp_value(values[name], escape_html) for escape_html, name in self._distinct])


def _slot_plan(slots: tuple[tuple[bool, str], ...]):
    """The distinct slots of a template, and a function that lays their encoded
    values out in slot order: each is encoded once, though a counted link's
    ``click_ref`` fills dozens of slots with one value."""
    distinct = tuple(dict.fromkeys(slots))
    index = tuple(distinct.index(slot) for slot in slots)
    if len(index) > 1:
        return distinct, itemgetter(*index)
    return distinct, lambda encoded: tuple(encoded[i] for i in index)


def _placeholder_values(recipient: Recipient, name: str) -> dict[str, str]:
    return {
        "name": name or GREETING_FALLBACK,
        "email": recipient.email,
        "unsubscribe_url": recipient.unsubscribe_url,
        "preferences_url": recipient.preferences_url,
        "web_url": recipient.web_url,
        "click_ref": recipient.click_ref,
    }


# --- headers --------------------------------------------------------------


def _header_line(name: str, value: str) -> bytes:
    """One header folded the way email.message folds it (RFC 2047 if need be)."""
    return _POLICY.header_factory(name, value).fold(policy=_POLICY).encode("ascii")


def _wire_header_line(name: str, value: str) -> bytes:
    """A header whose value is already ASCII wire form (make_list_id's), folded at
    spaces only. email.message would decode its encoded words and encode them
    again word by word, leaving a non-ASCII name's ``<`` bare."""
    folded = Header(value, header_name=name).encode(splitchars=" ", linesep="\r\n")
    return f"{name}: {folded}\r\n".encode("ascii")


class _WireHeader(str):
    """For build_reference: a header email.message writes with _wire_header_line."""

    def __new__(cls, name: str, value: str):
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy) -> str:
        return _wire_header_line(self.name, str(self)).decode("ascii")


def _static_tail(t: MessageTemplate, boundary: bytes) -> bytes:
    lines = [
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        _wire_header_line("List-Id", t.list_id),
    ]
    if t.feedback_id:
        lines.append(_header_line("Feedback-ID", t.feedback_id))
    lines.append(b"Precedence: bulk\r\n")
    # Auto-Submitted is deliberately absent: a newsletter is not an automatic
    # reply, and marking it so would stop people's legitimate auto-replies.
    lines.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n')
    return b"".join(lines)


def recipient_header(name: str, email: str) -> bytes:
    """The To header for an address in wire form; UTF-8 when its local part is not ASCII."""
    if not name:
        return b"To: " + email.encode("utf-8") + CRLF
    if len(name) > _MAX_UNFOLDED_NAME and email.isascii():
        # Rare enough to take the slow road: email.message folds it properly.
        return _header_line("To", str(Address(name, addr_spec=email)))
    if len(name) > _MAX_UNFOLDED_NAME:
        phrase = Header(name, "utf-8", header_name="To").encode(linesep="\r\n")  # folded encoded words
    elif _PLAIN_PHRASE.fullmatch(name):
        phrase = name
    elif name.isascii() and "=?" not in name:
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        # Not ASCII, or text a reader would take for an encoded word:
        # encode it, so it reads back exactly as written.
        phrase = Header(name, "utf-8", header_name="To").encode(linesep="\r\n")
    return f"To: {phrase} <{email}>\r\n".encode("utf-8")


class _DateLine:
    """The Date header, formatted once per second rather than per message."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._line = f"Date: {formatdate(second, usegmt=True)}\r\n".encode("ascii")
            self._second = second
        return self._line


_DATE_LINE = _DateLine()
