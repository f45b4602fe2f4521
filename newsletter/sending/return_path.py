"""VERP return paths: each message's envelope sender names its ledger row.

The envelope sender is ``bounces+<delivery id>-<tag>@<bounce domain>``; the
tag is an HMAC of the id, so a bounce names its ledger row and nobody can
forge one that names another. Delivery makes these; the bounce mailbox reader
(``feedback.bounces``) reads them back.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from newsletter.config import Settings

_VERP = re.compile(r"bounces\+(\d+)-([0-9a-f]{12})@", re.IGNORECASE)


def verp_address(settings: Settings, delivery_id: int) -> str:
    return f"bounces+{delivery_id}-{_tag(settings.signing_keys[0], delivery_id)}@{settings.bounce_domain}"


def delivery_from_verp(settings: Settings, address: str) -> int | None:
    """The delivery id a VERP address names, if its tag is ours (any current key)."""
    match = _VERP.search(address or "")
    if not match:
        return None
    delivery_id, tag = int(match.group(1)), match.group(2).lower()
    if any(hmac.compare_digest(tag, _tag(key, delivery_id)) for key in settings.signing_keys):
        return delivery_id
    return None


def _tag(key: str, delivery_id: int) -> str:
    # Lower-case hex: some servers change the case of local parts.
    return hmac.new(key.encode(), f"verp:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:12]
