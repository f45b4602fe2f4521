"""What a pipelined session (DATA, RFC 2920) and a streaming one (BDAT, RFC 3030)
must both do when the server refuses, limits or throttles inside a group:
each scenario runs in both modes against the scripted server. What only one
mode does is in test_smtp_pipelining.py and test_smtp_chunking.py."""

from __future__ import annotations

import ssl

import pytest
import trustme

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY
from tests.scripted_smtp import ScriptedSmtpServer
from tests.transports.smtp_messages import addresses, envelopes, plain_transport, recipients, statuses


@pytest.fixture(params=["pipelining", "chunking"])
def mode(request) -> str:
    return request.param


def server_for(mode: str, **options) -> ScriptedSmtpServer:
    """The scripted server, offering CHUNKING in the streaming mode (PIPELINING in both)."""
    return ScriptedSmtpServer(chunking=mode == "chunking", **options)


def last_command(mode: str) -> str:
    return "BDAT" if mode == "chunking" else "DATA"


def test_messages_go_over_verified_tls(mode):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    sent = envelopes(3)
    with server_for(mode, hold_replies=True, expected=3, ssl_context=server_context) as server:
        with plain_transport(server, security="tls", ssl_context=client_context, connections=1) as transport:
            results = transport.send_many(sent)

    assert statuses(results) == [SENT] * 3
    assert [m.data for m in server.messages] == [e.message for e in sent]
    assert server.verbs.count(last_command(mode)) == 3


def test_a_refused_recipient_inside_a_group_fails_that_recipient_only(mode):
    with server_for(mode, hold_replies=mode == "pipelining", expected=3, reject=("reader2@example.com",)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(4))

    assert statuses(results) == [SENT, PERMANENT, SENT, SENT]
    assert results[1].code == 550 and results[1].hard_bounce
    assert "reader2@example.com" in results[1].error
    assert recipients(server) == addresses([1, 3, 4])
    assert server.connections == 1
    if mode == "pipelining":  # the refused transaction is reset before the next group, on the same connection
        assert server.groups[2] == ["RSET", "MAIL", "RCPT", "DATA"]


def test_452_after_n_recipients_sends_the_rest_on_new_connections_once_each(mode):
    with server_for(mode, rcpt_limit=2) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(5))

    assert statuses(results) == [SENT] * 5
    assert recipients(server) == addresses(range(1, 6))
    assert [m.connection for m in server.messages] == [1, 1, 2, 2, 3]


def test_452_twice_for_the_same_message_fails_it_for_now(mode):
    with server_for(mode, rcpt_limit=0) as server:  # every session is full at once
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(3))

    assert statuses(results) == [TEMPORARY] * 3
    assert [r.code for r in results] == [452] * 3
    assert not any(r.throttled for r in results)  # too many recipients is not a request to slow down
    assert server.messages == []


def test_421_to_mail_inside_a_group_is_a_throttle_and_holds_back_the_rest(mode):
    with server_for(mode, mail_421=(2,)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(4))
            assert statuses(results) == [SENT, TEMPORARY, TEMPORARY, TEMPORARY]
            assert results[1].code == 421 and not results[1].uncertain and results[1].throttled
            assert all(r.held_back and "not sent yet" in r.error for r in results[2:])
            again = transport.send_many(envelopes(2, start=3))

    assert statuses(again) == [SENT, SENT]
    assert [(m.recipients, m.connection) for m in server.messages] == [
        (["reader1@example.com"], 1), (["reader3@example.com"], 2), (["reader4@example.com"], 2),
    ]
