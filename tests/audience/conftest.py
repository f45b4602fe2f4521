"""Fixtures of the sign-up tests: a publication with a "news" list, and a
transport that records the confirmation emails."""

from __future__ import annotations

import pytest

from newsletter.audience.subscribers import create_list
from newsletter.store.models import PublicationRow
from tests.audience.signups import PUB
from tests.memory_transport import MemoryTransport


@pytest.fixture
def signup_world(session):
    """The session, with a publication that has a "news" list (the sign-up tests' world)."""
    session.add(PublicationRow(
        slug=PUB, name="Together We're Better", from_name="Together We're Better", from_email="news@example.org",
        reply_to="communications@example.org", postal_address="1 Partnership Way, Stafford",
        web_base_url="https://newsletter.example.org/together-were-better/", settings={},
    ))
    session.flush()
    create_list(session, PUB, "news", "Monthly news")
    session.commit()
    return session


@pytest.fixture
def mail():
    return MemoryTransport()
