"""SMTP PIPELINING (RFC 2920): against real servers that announce it (Postfix's
smtp-sink, and Postfix's smtpd in front of one), and a scripted server for the
faults inside a pipelined group (those that streaming with BDAT meets too
are in test_smtp_modes.py, run in both modes). The aiosmtpd server of
tests/transports/test_smtp.py does not announce it: those tests are the
one-command-at-a-time path."""

from __future__ import annotations

import logging
import smtplib

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Result
from newsletter.transports.smtp.work import Work
from tests import postfix_server
from tests.conftest import _missing
from tests.scripted_smtp import ScriptedSmtpServer
from tests.transports.smtp_messages import addresses, as_sunk, envelopes, plain_transport, recipients, statuses


# -- the scripted server: proof of grouping, and faults inside a group -----------------


def test_each_message_is_one_group_and_the_next_group_follows_the_final_dot():
    # The server holds its replies until a group's DATA, and the reply to a
    # message until the next group has come: a client that waited for each
    # reply would wait out its timeout and fail every message.
    sent = envelopes(5)
    with ScriptedSmtpServer(hold_replies=True, expected=5) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(sent)

    assert statuses(results) == [SENT] * 5
    assert [r.provider_message_id for r in results] == [f"S{n:05d}" for n in range(1, 6)]
    assert [m.data for m in server.messages] == [e.message for e in sent]
    assert [m.recipients for m in server.messages] == [[e.recipient] for e in sent]
    assert server.groups == [["MAIL", "RCPT", "DATA"]] * 5
    assert server.connections == 1


def test_a_line_dropped_after_the_dot_leaves_that_message_uncertain_and_the_next_unharmed():
    with ScriptedSmtpServer(drop_after_dot=(2,)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(4))

    assert statuses(results) == [SENT, TEMPORARY, SENT, SENT]
    assert results[1].uncertain
    assert not any(r.uncertain for r in results[:1] + results[2:])
    # Message 3's group went out behind message 2's dot: it is sent once, on a new connection.
    assert [(m.recipients, m.answered) for m in server.messages] == [
        (["reader1@example.com"], True), (["reader2@example.com"], False),
        (["reader3@example.com"], True), (["reader4@example.com"], True),
    ]
    assert [m.connection for m in server.messages] == [1, 1, 2, 2]


def test_421_after_a_dot_fails_that_message_for_now_and_holds_back_the_group_behind_it():
    with ScriptedSmtpServer(final_421=(2,)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(4))

    assert statuses(results) == [SENT, TEMPORARY, TEMPORARY, TEMPORARY]
    assert results[1].code == 421 and not results[1].uncertain
    assert all(r.throttled for r in results[1:])  # a 421 asks the sender to slow down
    assert [(m.recipients, m.accepted) for m in server.messages] == [
        (["reader1@example.com"], True), (["reader2@example.com"], False),
    ]
    assert server.connections == 1


def test_a_server_that_answers_a_group_out_of_turn_gets_one_command_at_a_time(caplog):
    with ScriptedSmtpServer(out_of_turn=True) as server:
        with plain_transport(server, connections=1) as transport:
            with caplog.at_level(logging.WARNING):
                first = transport.send_many(envelopes(3))
            second = transport.send_many(envelopes(2, start=4))

    assert statuses(first + second) == [SENT] * 5
    assert recipients(server) == addresses(range(1, 6))  # each once: nothing went out before the bad replies
    assert server.groups == [["MAIL", "RCPT", "DATA"]]  # the one group answered out of turn
    assert "answers out of turn (354 End data" in caplog.text
    assert "SMTP_PIPELINING=false" in caplog.text


def test_pipelining_can_be_turned_off():
    with ScriptedSmtpServer() as server:
        settings = settings_from({
            "TRANSPORT": "smtp", "SMTP_HOST": server.host, "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none", "SMTP_PIPELINING": "false", "SMTP_CONNECTIONS": "1",
        })
        with make_transport(settings) as transport:
            results = transport.send_many(envelopes(3))

    assert statuses(results) == [SENT] * 3
    assert server.groups == []  # every read held one command: each waited for its reply
    assert recipients(server) == addresses([1, 2, 3])


# -- Postfix's smtp-sink --------------------------------------------------------------


@pytest.mark.slow  # starts Postfix's smtp-sink
@pytest.mark.parametrize("sink_options", [(), ("-p",)], ids=["pipelining", "without-pipelining"])
def test_many_messages_reach_smtp_sink_byte_for_byte_once_each(sink, sink_options):
    sent = envelopes(60)
    with plain_transport(sink, connections=3, messages_per_connection=7) as transport:
        results = transport.send_many(sent[:30]) + transport.send_many(sent[30:])

    assert statuses(results) == [SENT] * 60
    received = {m.recipients[0]: m for m in sink.messages()}
    assert sorted(received) == sorted(e.recipient for e in sent)
    for envelope in sent:
        assert received[envelope.recipient].data == as_sunk(envelope.message)
        assert received[envelope.recipient].mail_from == envelope.sender


@pytest.mark.slow  # starts Postfix's smtp-sink
@pytest.mark.parametrize("sink_options", [("-q", ".")])
def test_smtp_sink_hanging_up_after_each_dot_leaves_each_message_uncertain_and_sent_once(sink):
    with plain_transport(sink, connections=2) as transport:
        results = transport.send_many(envelopes(6))

    assert statuses(results) == [TEMPORARY] * 6
    assert all(r.uncertain for r in results)
    assert sorted(m.recipients[0] for m in sink.messages()) == addresses(range(1, 7))


@pytest.mark.slow  # starts Postfix's smtp-sink
@pytest.mark.parametrize("sink_options", [("-f", "rcpt")])
def test_smtp_sink_refusing_every_recipient_fails_each_for_good(sink):
    with plain_transport(sink, connections=1) as transport:
        results = transport.send_many(envelopes(4))

    assert statuses(results) == [PERMANENT] * 4
    assert all(500 <= r.code < 600 for r in results)
    # (the sink may leave an empty file for a transaction that took no recipient)
    assert [m for m in sink.messages() if m.recipients or m.data] == []


# -- Postfix's own smtpd, passing what it accepts on to smtp-sink ----------------------


@pytest.mark.slow  # starts Postfix's smtpd and smtp-sink
def test_a_real_postfix_takes_pipelined_messages_and_refuses_one_recipient_only(sink):
    why_not = postfix_server.usable()
    if why_not:
        _missing("Postfix", why_not)
    sent = envelopes(12)
    with postfix_server.PostfixServer(sink.port, reject=("reader5@example.com",)) as postfix:
        with smtplib.SMTP(postfix.host, postfix.port, timeout=30) as probe:
            probe.ehlo()
            offered = set(probe.esmtp_features)
        # DATA pipelined: with CHUNKING (which Postfix offers too) messages would be
        # streamed with BDAT, as test_smtp_chunking.py shows.
        with plain_transport(postfix, connections=2, chunking=False) as transport:
            results = transport.send_many(sent)

    assert {"pipelining", "chunking"} <= offered

    assert statuses(results) == [SENT] * 4 + [PERMANENT] + [SENT] * 7
    assert results[4].code == 550 and results[4].hard_bounce
    received = {m.recipients[0]: m for m in sink.messages()}
    assert sorted(received) == sorted(e.recipient for e in sent if e.recipient != "reader5@example.com")
    for envelope in sent:
        if envelope.recipient in received:
            # Postfix adds its Received line on top; the rest arrives as sent.
            assert received[envelope.recipient].data.endswith(as_sunk(envelope.message))


def test_a_throttle_holds_back_every_call_waiting_until_the_call_that_met_it_is_collected():
    # Two calls in the shared queue, as delivery hands the next chunk over before
    # the last is answered; one lane takes the first message and meets a 421.
    work = Work(lanes=1)
    first = work.add(envelopes(3))
    second = work.add(envelopes(2, start=4))
    taken = work.take()
    throttle = Result(first.envelopes[0].delivery_id, TEMPORARY, code=421, throttled=True,
                      error="421 4.7.0 Too many messages, closing connection")
    work.finish(taken, throttle)

    # Nothing else starts: the rest of its call and all of the other call come back untried.
    assert work.take() is None
    assert second.done.is_set() and first.done.is_set()
    assert all(r.throttled and r.held_back and r.code == 421 for r in second.outcomes())
    assert work.collect(first)[0] is throttle
    assert all(r.held_back for r in first.outcomes()[1:])

    # Its caller has it now (delivery records it and tells the limiter): calls go out again.
    third = work.add(envelopes(1, start=6))
    assert not third.done.is_set()
    assert work.take() is not None


def test_a_call_that_comes_during_a_hold_comes_back_untried_at_once():
    work = Work(lanes=1)
    first = work.add(envelopes(2))
    work.finish(work.take(), Result(first.envelopes[0].delivery_id, TEMPORARY, code=451, enhanced_code="4.7.1",
                                    throttled=True, retry_after=None, error="451 4.7.1 rate exceeded"))
    late = work.add(envelopes(2, start=3))

    assert late.done.is_set()
    assert [(r.status, r.held_back) for r in late.outcomes()] == [(TEMPORARY, True)] * 2
    assert work.take() is None
