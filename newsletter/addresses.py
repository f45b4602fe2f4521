"""The identity of an email address: one key for subscribers and suppressions.

``address_key`` is the one rule. The whole address is lower-cased (mailbox
providers, and people, treat the local part without regard to case) and the
domain is brought to the form email-validator normalises to: IDNA, shown in
Unicode, so ``x@XN--BCHER-KVA.example`` and ``x@Bücher.example`` are one
person. Subscribers keep their address as typed for display and sending, and
are found by this key (``subscribers.email_key``); the suppression list is
keyed by it (``suppressions.email``).

``wire_address`` is the form an address goes out in: the domain in its IDNA
ASCII form (``x@xn--bcher-kva.example``), which every server and provider
takes, and the local part as stored. A local part that is not ASCII
(``jörg@example.org``) can go out only over SMTP to a server that offers
SMTPUTF8 (RFC 6531), or through a provider that does (``local_part_is_ascii``).

``normalise_address`` is the stored form of an address, as email-validator
gives it. Most addresses are plain ASCII (``jo.bloggs@example.org``); for
those the answer is known without running the whole validator on each one:
the local part is kept as typed and the domain is checked once per domain.
Anything else goes to email-validator itself, so its rules and its error
messages apply unchanged (tests/test_addresses.py holds the two to the same
answers on a corpus of awkward addresses).
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import ATEXT, CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

HASH_PREFIX = "sha256:"


def address_key(address: str) -> str:
    """The key of an address in any form. A hashed suppression entry
    (``sha256:`` + lower-case hex) is its own key."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{_domain_key(domain)}"


def _domain_key(domain: str) -> str:
    lowered = domain.lower()
    if lowered.isascii() and "xn--" not in lowered:
        return lowered  # the common case, without the IDNA tables
    try:
        return idna.decode(idna.encode(domain, uts46=True))
    except idna.IDNAError:
        return lowered  # not a domain IDNA can read: compared as typed, lower-cased


def wire_address(address: str) -> str:
    """The address with its domain in IDNA ASCII form, as SMTP and providers take it;
    an address whose domain IDNA cannot encode is given back as it is (and refused
    when the message is built)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def local_part_is_ascii(address: str) -> bool:
    """False when the part before the @ needs SMTPUTF8 to be sent at all."""
    return address.rpartition("@")[0].isascii()


# A plain address: dot-atom ASCII local part, one @, an ASCII host name of
# letters, digits, hyphens and dots. Nothing here that email-validator would
# rewrite (no quotes, display names, IDNA or non-ASCII, no comments or spaces).
_PLAIN = re.compile(rf"([{ATEXT}]+(?:\.[{ATEXT}]+)*)@([A-Za-z0-9.-]+)")


def normalise_address(raw: str) -> str:
    """The stored form of an address (email-validator's ``normalized``, without
    a DNS lookup); raises EmailNotValidError with email-validator's reason."""
    address = raw.strip()
    plain = _PLAIN.fullmatch(address)
    if plain is not None and len(address) <= EMAIL_MAX_LENGTH:
        local, domain = plain.groups()
        if local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES:  # those are lower-cased: left to the validator
            checked = _checked_domain(domain)
            if checked is not None:
                return f"{local}@{checked}"
    return validate_email(address, check_deliverability=False).normalized


@lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """The normalised form of a plain ASCII domain, or None to let the whole
    validator decide (a domain it refuses, or one in IDNA form: xn--)."""
    if "xn--" in domain.lower():
        return None
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.domain if checked.domain == checked.ascii_domain else None
