"""The one rule for values bound for a message's headers: a line break, raw or
hidden in an RFC 2047 encoded word, is refused with an ``InputError`` naming
the field, so a subscriber's name can never add a header (a Bcc, say) to a
message; an address we cannot send from, or to, is refused the same way.

Used by the loader (and so by check, build, proof and schedule), by the
audience's importers, and by every message a send builds.
"""

from __future__ import annotations

import binascii
import re
from email.header import decode_header, make_header

from newsletter.addresses import wire_address
from newsletter.errors import InputError, Problem

# Characters that end or break a header line in some reader: C0 controls but
# tab, DEL, and the Unicode line and paragraph separators.
_LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# A dot-atom address with an ASCII domain: what we can put in a header as is.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# A recipient's address in wire form: the same, but a local part may hold
# characters beyond ASCII (sent with SMTPUTF8).
_RECIPIENT_ADDRESS = re.compile(
    r"(?:[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s\x85\u2028\u2029])+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PERCENT_LINE_BREAK = re.compile(r"%0[adAD]")
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[A-Za-z0-9.-]+>")
# ASCII printable but space, double quote and angle brackets.
_URL = re.compile(r"[!#-;=?-~]+")
_MAX_URL_LENGTH = 600  # keeps List-Unsubscribe under the 998-octet line limit
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class UnsendableAddress(InputError):
    """The recipient's address cannot be put on a message at all: the row can never be sent."""


def check_template(t) -> None:
    """Refuse a message template (``message.MessageTemplate``) whose headers could break."""
    problems = [
        *_header_text_problems("subject", t.full_subject),
        *_header_text_problems("from_name", t.from_name),
        *_header_text_problems("list_id", t.list_id),
        *_header_text_problems("feedback_id", t.feedback_id),
        *_address_problems("from_email", t.from_email),
        *_address_problems("return_path", t.return_path),
    ]
    if t.reply_to:
        problems += _address_problems("reply_to", t.reply_to)
    if t.unsubscribe_mailto:
        problems += _address_problems("unsubscribe_mailto", t.unsubscribe_mailto)
    if not t.subject.strip():
        problems.append(Problem("field subject", "is empty", "give the issue a subject"))
    if not _DOMAIN.fullmatch(t.domain):
        problems.append(Problem("field domain", f"{t.domain!r} is not a domain name", "use e.g. example.org"))
    if problems:
        raise InputError(problems)


def check_recipient(r) -> tuple[str, str]:
    """Refuse a recipient (``message.Recipient``) whose values could break a header;
    return the name as shown and the address in wire form."""
    address = wire_address(r.email)
    unsendable = _recipient_address_problems(r.email, address)
    if unsendable:
        raise UnsendableAddress(unsendable)
    problems = _header_text_problems("name", r.name, r.email)
    if not (r.message_id.isascii() and _MESSAGE_ID.fullmatch(r.message_id)):
        problems.append(Problem("field message_id", f"{r.message_id!r} is not a Message-ID",
                                "make it with message.make_message_id"))
    for label, url in (("unsubscribe_url", r.unsubscribe_url), ("preferences_url", r.preferences_url),
                       ("web_url", r.web_url), ("click_ref", r.click_ref)):
        if (url or label == "unsubscribe_url") and not (_URL.fullmatch(url) and len(url) <= _MAX_URL_LENGTH):
            problems.append(Problem(f"field {label}", f"{url!r} is not a usable link",
                                    "links must be ASCII, one line, with no spaces or angle brackets"))
    if problems:
        raise InputError(problems)
    # Runs of spaces and tabs in a name are typing accidents; show one space.
    return " ".join(r.name.split()), address


def _recipient_address_problems(stored: str, address: str) -> list[Problem]:
    if _LINE_BREAKING.search(address) or _PERCENT_LINE_BREAK.search(address):
        return [Problem("field email", f"{stored!r} contains a line break or control character",
                        "correct the address; it could add headers to the message")]
    if not _RECIPIENT_ADDRESS.fullmatch(address):
        return [Problem("field email", f"{stored!r} is not an address we can send to",
                        "correct the address: a plain address like name@example.org")]
    return []


def header_field_problems(label: str, value: str, *, address: bool = False) -> list[Problem]:
    """The one rule for a value bound for a header (a line break, raw or encoded,
    or an address we cannot send from), shared by the loader, and so by check,
    build, proof and schedule, and by every message a send builds."""
    return _address_problems(label, value) if address else _header_text_problems(label, value)


def _header_text_problems(label: str, value: str, recipient: str = "") -> list[Problem]:
    whose = f" (recipient {recipient!r})" if recipient else ""
    if _LINE_BREAKING.search(value) or _hides_line_break(value):
        return [Problem(f"field {label}", f"contains a line break or control character{whose}",
                        f"remove it from the {label.replace('_', ' ')}; it could add headers to the message")]
    return []


def _hides_line_break(value: str) -> bool:
    """True if an RFC 2047 encoded word in value decodes to a line break."""
    if "=?" not in value or not _ENCODED_WORD.search(value):
        return False
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, binascii.Error):  # undecodable: refuse it too
        return True
    return bool(_LINE_BREAKING.search(decoded))


def _address_problems(label: str, value: str) -> list[Problem]:
    if _LINE_BREAKING.search(value) or _PERCENT_LINE_BREAK.search(value):
        return [Problem(f"field {label}", f"{value!r} contains a line break or control character",
                        "correct the address; it could add headers to the message")]
    if not _ADDRESS.fullmatch(value):
        return [Problem(f"field {label}", f"{value!r} is not an address we can send to",
                        "use a plain ASCII address like name@example.org")]
    return []
