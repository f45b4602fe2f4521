"""A sign-up as the page makes one, and the link in its confirmation email."""

from __future__ import annotations

import re

from newsletter.audience import signup

PUB = "together-were-better"


def ask(session, settings, mail, email="ann@example.com", name="Ann", list_slug="news"):
    return signup.request_subscription(session, settings, PUB, list_slug, email, name, transport=mail)


def confirm_link(message) -> str:
    return re.search(r"https?://\S+/confirm/\S+", message.get_body(("plain",)).get_content()).group(0)


def token_of(message) -> str:
    return confirm_link(message).rsplit("/", 1)[1]
