"""Per-recipient values, filled in after the issue is compiled once.

Templates write ``%%name%%``-style placeholders; MJML compilation leaves them
alone; ``message.MessageTemplate`` fills them for each recipient. In HTML the
values are HTML-escaped, in the text part they are used as they are.
"""

from __future__ import annotations

import html
import re

# name: the subscriber's name, or a greeting fallback ("reader") when unknown
# email: the subscriber's address
# unsubscribe_url: the one-click unsubscribe page for this recipient and send
# preferences_url: the page where the recipient manages lists
# web_url: the public web copy of the issue (no personal data in it)
# click_ref: the per-message part of counted links (a random nonce and when the
#   message was made; see authoring/counted_links.py), "" when clicks are not counted
NAMES = ("name", "email", "unsubscribe_url", "preferences_url", "web_url", "click_ref")

PATTERN = re.compile(r"%%([a-z_]+)%%")


def token(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"unknown placeholder {name!r}; known: {', '.join(NAMES)}")
    return f"%%{name}%%"


def find(text: str) -> list[str]:
    """Every placeholder-like token in text, known or not, in order."""
    return PATTERN.findall(text)


def fill(text: str, values: dict[str, str], *, escape_html: bool) -> str:
    """The slow, obvious substitution: a reference for the fast builder and for checks."""

    def sub(match: re.Match) -> str:
        value = values[match.group(1)]
        return html.escape(value, quote=True) if escape_html else value

    return PATTERN.sub(sub, text)
