"""Fixtures of the bounce tests (the Maildir and IMAP readers): a finished send
with VERP return paths."""

from __future__ import annotations

from dataclasses import replace

import pytest

from newsletter.sending import scheduling
from tests.feedback.bounce_reports import BOUNCE_DOMAIN
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send


@pytest.fixture
def verp(settings):
    return replace(settings, bounce_domain=BOUNCE_DOMAIN, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=50)


@pytest.fixture
def sent(session, verp):
    """A finished send with VERP: {recipient: (envelope sender, original message bytes)}."""
    _, lst, issue = make_world(session, 3)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=50)
    session.commit()
    transport = MemoryTransport()
    run_send(session, verp, transport, send.id)
    return {e.recipient: (e.sender, e.message) for e in transport.accepted}
