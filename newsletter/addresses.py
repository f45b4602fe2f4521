"""The identity of an email address: one key for subscribers and suppressions.

``address_key`` is the one rule. The whole address is lower-cased (mailbox
providers, and people, treat the local part without regard to case) and the
domain is brought to the form email-validator normalises to: IDNA, shown in
Unicode, so ``x@XN--BCHER-KVA.example`` and ``x@Bücher.example`` are one
person. Subscribers keep their address as typed for display and sending, and
are found by this key (``subscribers.email_key``); the suppression list is
keyed by it (``suppressions.email``).
"""

from __future__ import annotations

import idna

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
