"""CHUNKING (BDAT, RFC 3030): messages streamed on a connection, none waiting for
a reply of its own. Against the scripted server for the faults inside the
stream (those a pipelined session meets too are in test_smtp_modes.py, run in
both modes), and against a real Postfix smtpd, which offers CHUNKING."""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY
from tests import postfix_server
from tests.conftest import _missing
from tests.scripted_smtp import ScriptedSmtpServer
from tests.transports.smtp_messages import accepted, addresses, as_sunk, envelopes, plain_transport, recipients, statuses

GROUP = ["RSET", "MAIL", "RCPT", "BDAT"]


def test_messages_are_streamed_with_bdat_none_waiting_for_a_reply():
    # The server answers nothing until the fifth message has arrived whole: a
    # client that waited for any reply before sending on would wait forever.
    sent = envelopes(5)
    with ScriptedSmtpServer(chunking=True, hold_replies=True, expected=5) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(sent)

    assert statuses(results) == [SENT] * 5
    assert [r.provider_message_id for r in results] == [f"S{n:05d}" for n in range(1, 6)]
    assert [m.data for m in server.messages] == [e.message for e in sent]  # as they are: no dot-stuffing
    assert [m.recipients for m in server.messages] == [[e.recipient] for e in sent]
    assert server.verbs[:1 + 3 + 4 * 4] == ["EHLO", "MAIL", "RCPT", "BDAT"] + GROUP * 4
    assert "DATA" not in server.verbs
    assert server.connections == 1


def test_the_window_bounds_the_messages_in_flight():
    # With a window of 2, the server holding its replies until the fifth
    # message gets two a connection, and no answer until the fifth.
    with ScriptedSmtpServer(chunking=True, hold_replies=True, expected=5) as server:
        with plain_transport(server, connections=1, window=2, timeout=1) as transport:
            results = transport.send_many(envelopes(5))

    assert [m.connection for m in server.messages] == [1, 1, 2, 2, 3]
    assert [(r.status, r.uncertain) for r in results] == [(TEMPORARY, True)] * 4 + [(SENT, False)]


def test_a_line_dropped_after_the_last_chunk_leaves_exactly_the_unanswered_messages_uncertain():
    with ScriptedSmtpServer(chunking=True, drop_after_dot=(2,)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(6))

    assert results[1].status == TEMPORARY and results[1].uncertain
    # The others were answered (sent), or went out and were not answered
    # (uncertain), or had not all gone out (sent again, once, on a new line).
    for number, result in enumerate(results, start=1):
        taken = [m for m in server.messages if m.recipients == [f"reader{number}@example.com"] and m.accepted]
        if result.status == SENT:
            assert len(taken) == 1
        else:
            assert result.status == TEMPORARY and result.uncertain and taken == []
    assert accepted(server) == sorted(set(accepted(server)))  # none twice


def test_a_line_dropped_with_one_message_in_flight_retries_nothing_that_went_out():
    with ScriptedSmtpServer(chunking=True, drop_after_dot=(2,)) as server:
        with plain_transport(server, connections=1, window=1) as transport:
            results = transport.send_many(envelopes(4))

    assert statuses(results) == [SENT, TEMPORARY, SENT, SENT]
    assert results[1].uncertain and not any(r.uncertain for r in results[:1] + results[2:])
    assert [m.connection for m in server.messages] == [1, 1, 2, 2]


def test_421_after_a_last_chunk_is_a_throttle_and_holds_back_the_ones_streamed_behind_it():
    with ScriptedSmtpServer(chunking=True, final_421=(2,)) as server:
        with plain_transport(server, connections=1) as transport:
            results = transport.send_many(envelopes(5))
            # Messages 3 to 5 went out in the window behind message 2, and the server
            # closed without reading them: they come back untried, to wait with the rest.
            assert statuses(results) == [SENT, TEMPORARY, TEMPORARY, TEMPORARY, TEMPORARY]
            assert results[1].code == 421 and not results[1].uncertain and results[1].throttled
            assert not results[1].held_back
            assert all(r.throttled and r.held_back and not r.uncertain for r in results[2:])
            assert all(r.error.startswith("not sent yet, the server asked to slow down: 421") for r in results[2:])
            assert accepted(server) == addresses([1])
            assert server.connections == 1

            again = transport.send_many(envelopes(3, start=3))  # the hold ended with the call that met it

    assert statuses(again) == [SENT] * 3
    assert accepted(server) == addresses([1, 3, 4, 5])
    assert [(m.recipients[0], m.connection) for m in server.messages] == [
        ("reader1@example.com", 1), ("reader2@example.com", 1),
        ("reader3@example.com", 2), ("reader4@example.com", 2), ("reader5@example.com", 2),
    ]


def test_a_server_that_answers_the_stream_out_of_turn_gets_one_command_at_a_time(caplog):
    # It answers each MAIL, RCPT, BDAT in reverse: harmless while all say 250,
    # but the refused recipient's group comes back with the BDAT taken.
    with ScriptedSmtpServer(chunking=True, out_of_turn=True, reject=("reader2@example.com",)) as server:
        with plain_transport(server, connections=1) as transport:
            with caplog.at_level(logging.WARNING):
                first = transport.send_many(envelopes(3))
            second = transport.send_many(envelopes(2, start=4))

    assert first[0].status == SENT
    # Not to be trusted from there on: what went out and was not answered for sure is uncertain.
    assert [(r.status, r.uncertain) for r in first[1:]] == [(TEMPORARY, True)] * 2
    assert statuses(second) == [SENT] * 2
    assert "answers out of turn" in caplog.text and "SMTP_PIPELINING=false" in caplog.text
    assert server.verbs.count("BDAT") == 3 and server.verbs.count("DATA") == 2  # then one at a time, with DATA
    assert accepted(server) == addresses([1, 3, 4, 5])


def test_calls_made_while_others_are_out_share_the_connections_and_each_gets_its_own_answers():
    with ScriptedSmtpServer(chunking=True) as server:
        with plain_transport(server, connections=2) as transport:
            with ThreadPoolExecutor(3) as pool:
                calls = [pool.submit(transport.send_many, envelopes(10, start=1 + 10 * n)) for n in range(3)]
                answers = [call.result(timeout=60) for call in calls]

    queue_ids = {f"S{m.number:05d}": m.recipients[0] for m in server.messages}
    for n, results in enumerate(answers):
        assert [r.delivery_id for r in results] == list(range(1 + 10 * n, 11 + 10 * n))
        assert statuses(results) == [SENT] * 10
        assert [queue_ids[r.provider_message_id] for r in results] == [f"reader{i}@example.com" for i in
                                                                       range(1 + 10 * n, 11 + 10 * n)]
    assert recipients(server) == addresses(range(1, 31))
    assert server.connections == 2


def test_chunking_can_be_turned_off():
    with ScriptedSmtpServer(chunking=True) as server:
        settings = settings_from({
            "TRANSPORT": "smtp", "SMTP_HOST": server.host, "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none", "SMTP_CHUNKING": "false", "SMTP_CONNECTIONS": "1",
        })
        with make_transport(settings) as transport:
            results = transport.send_many(envelopes(3))

    assert statuses(results) == [SENT] * 3
    assert "BDAT" not in server.verbs and server.verbs.count("DATA") == 3


def test_a_window_below_one_is_refused_up_front():
    settings = settings_from({"TRANSPORT": "smtp", "SMTP_WINDOW": "0"})
    with pytest.raises(Exception, match="SMTP window 0"):
        make_transport(settings)


# -- a real Postfix smtpd, which offers CHUNKING -----------------------------------------


class RecordingRelay:
    """Passes a TCP connection on to ``port`` and keeps what the client sent."""

    def __init__(self, port: int):
        self.target = port
        self.sent = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]

    def __enter__(self) -> RecordingRelay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._copy, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._copy, args=(server, client, False), daemon=True).start()

    def _copy(self, source: socket.socket, target: socket.socket, keep: bool) -> None:
        try:
            while data := source.recv(256 * 1024):
                if keep:
                    self.sent += data
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.mark.slow  # starts Postfix's smtpd and smtp-sink
def test_a_real_postfix_takes_streamed_bdat_messages_and_refuses_one_recipient_only(sink):
    why_not = postfix_server.usable()
    if why_not:
        _missing("Postfix", why_not)
    sent = envelopes(40)
    with postfix_server.PostfixServer(sink.port, reject=("reader5@example.com",)) as postfix:
        with RecordingRelay(postfix.port) as relay:
            with plain_transport(relay, connections=2, messages_per_connection=15) as transport:
                results = transport.send_many(sent[:25]) + transport.send_many(sent[25:])

    assert b"BDAT " in relay.sent and b"\r\nDATA\r\n" not in relay.sent
    assert statuses(results) == [SENT] * 4 + [PERMANENT] + [SENT] * 35
    assert results[4].code == 550 and results[4].hard_bounce
    received = {m.recipients[0]: m for m in sink.messages()}
    assert sorted(received) == sorted(e.recipient for e in sent if e.recipient != "reader5@example.com")
    for envelope in sent:
        if envelope.recipient in received:
            assert received[envelope.recipient].data.endswith(as_sunk(envelope.message))
