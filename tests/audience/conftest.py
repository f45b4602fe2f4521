"""Fixtures of the audience tests: a publication with "monthly" and "staff" lists;
for the sign-up tests, one with a "news" list, and a transport that records
the confirmation emails."""

from __future__ import annotations

import pytest

from newsletter.audience import subscribers as subs
from newsletter.audience.subscribers import create_list
from newsletter.store.publications import sync_publication
from tests.audience.lists import publication
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


@pytest.fixture
def monthly(session):
    sync_publication(session, publication())
    subs.create_list(session, "together", "monthly", "Monthly newsletter")
    subs.create_list(session, "together", "staff", "Staff briefing")
    return "monthly"
