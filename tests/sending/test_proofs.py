"""Proofs through a provider: a copy to each address asked for, or, when one of
them can never be sent to, none at all and the reason."""

from __future__ import annotations

import pytest

from newsletter.authoring.publishing import checked_render
from newsletter.errors import InputError
from newsletter.sending.proofs import send_proof
from newsletter.transports.postmark import PostmarkTransport
from tests.conftest import SAMPLE_ISSUE
from tests.fake_providers import POSTMARK_TOKEN, postmark_server  # noqa: F401  (a fixture)


@pytest.fixture
def database_url(sqlite_url):
    """A proof touches no database: one kind is enough."""
    return sqlite_url


@pytest.fixture(scope="module")
def rendered():
    return checked_render(SAMPLE_ISSUE)[0]


def test_a_proof_reaches_each_address_marked_as_a_proof(settings, rendered, postmark_server):
    with PostmarkTransport(POSTMARK_TOKEN, api_url=postmark_server.url) as transport:
        results = send_proof(settings, rendered, ["comms@example.org", "Chair@Example.org"], transport)

    assert [r.status for r in results] == ["sent", "sent"]
    assert sorted(d.to_email for d in postmark_server.delivered) == ["Chair@example.org", "comms@example.org"]
    assert {d.subject for d in postmark_server.delivered} == {"[PROOF] " + rendered.issue.subject}


def test_an_address_the_provider_can_never_send_to_stops_the_proof_before_any_copy(settings, rendered,
                                                                                   postmark_server):
    with PostmarkTransport(POSTMARK_TOKEN, api_url=postmark_server.url) as transport:
        with pytest.raises(InputError) as raised:
            send_proof(settings, rendered, ["comms@example.org", "jörg@example.org"], transport, where="field To")

    problem = str(raised.value)
    assert "field To" in problem and "jörg@example.org" in problem and "Postmark" in problem
    assert "another address" in problem  # what to do
    assert postmark_server.delivered == [] and postmark_server.bodies == []  # not even the good one went
