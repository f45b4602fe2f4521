"""Fixtures of the sign-up tests: a publication with a "news" list, and a
transport that records the confirmation emails."""

from __future__ import annotations

import pytest

from newsletter.audience.subscribers import create_list
from tests.audience.signups import PUB
from tests.memory_transport import MemoryTransport


@pytest.fixture
def signup_world(session, publication_row):
    """The session, with a publication that has a "news" list (the sign-up tests' world)."""
    publication_row(session, slug=PUB)
    create_list(session, PUB, "news", "Monthly news")
    session.commit()
    return session


@pytest.fixture
def mail():
    return MemoryTransport()
