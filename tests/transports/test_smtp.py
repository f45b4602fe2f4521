from __future__ import annotations

import socket
import threading

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, TransportError
from newsletter.transports.smtp import SmtpTransport
from tests.smtp_server import SmtpTestServer, free_loopback_port, smtp_server  # noqa: F401 (a fixture)
from tests.transports.smtp_messages import envelopes, plain_transport, statuses


def test_messages_arrive_byte_for_byte_with_their_envelope(smtp_server):
    sent = envelopes(3)
    with plain_transport(smtp_server) as transport:
        results = transport.send_many(sent)

    assert statuses(results) == [SENT] * 3
    received = {m.recipients[0]: m for m in smtp_server.messages}
    for envelope, result in zip(sent, results):
        message = received[envelope.recipient]
        assert message.data == envelope.message
        assert message.mail_from == "bounces@example.org"
        assert message.recipients == [envelope.recipient]
        assert result.delivery_id == envelope.delivery_id
        assert result.provider_message_id == message.queue_id


@pytest.mark.parametrize("body", [
    b".The first line starts with a dot.\r\nSo does .this? No: only line starts count.\r\n",
    b"Dots at the start of many lines:\r\n.a\r\n..b\r\n...\r\n.\r\n.\r\nend\r\n",
    b"No line break at the end:\r\n.x",
])
def test_lines_starting_with_dots_arrive_as_written(smtp_server, body):
    message = b"From: news@example.org\r\nTo: reader1@example.com\r\nSubject: Dots\r\n\r\n" + body
    sent = [Envelope(delivery_id=1, sender="bounces@example.org", recipient="reader1@example.com", message=message)]
    with plain_transport(smtp_server) as transport:
        assert statuses(transport.send_many(sent)) == [SENT]
    [received] = smtp_server.messages
    # What the server took, with its final line break: the message as written, ending on CRLF.
    assert received.data.rstrip(b"\r\n") == message.rstrip(b"\r\n")


def test_a_built_message_goes_out_unscanned_and_arrives_as_written(smtp_server):
    from newsletter.authoring.message import MessageTemplate, Recipient, make_message_id

    text = ".A line that starts with a dot.\n.\n..and two: %%name%%\n"
    template = MessageTemplate(
        subject="Dots", html="<p>" + text + "</p>", text=text, from_name="News", from_email="news@example.org",
        reply_to="", domain="example.org", list_id="News <news.example.org>", feedback_id="",
        return_path="bounces@example.org",
    )
    envelope = template.envelope(1, Recipient(
        email="reader1@example.com", name=".Ann", message_id=make_message_id("example.org", 1, 1),
        unsubscribe_url="https://example.org/u/x",
    ))
    assert envelope.dot_free
    with plain_transport(smtp_server) as transport:
        assert statuses(transport.send_many([envelope])) == [SENT]
    [received] = smtp_server.messages
    assert received.data == envelope.message


def test_one_connection_carries_many_messages_across_calls(smtp_server):
    with plain_transport(smtp_server, connections=1) as transport:
        first = transport.send_many(envelopes(3))
        second = transport.send_many(envelopes(3, start=4))

    assert statuses(first + second) == [SENT] * 6
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 6


def test_reconnects_after_the_messages_per_connection_limit(smtp_server):
    with plain_transport(smtp_server, connections=1, messages_per_connection=3) as transport:
        results = transport.send_many(envelopes(7))

    assert statuses(results) == [SENT] * 7
    assert [m.connection for m in smtp_server.messages] == [1, 1, 1, 2, 2, 2, 3]


def test_a_large_chunk_is_spread_over_parallel_connections(smtp_server):
    smtp_server.reply_delay = 0.005  # like a server a little way off
    sent = envelopes(200)
    with plain_transport(smtp_server, connections=4) as transport:
        results = transport.send_many(sent)

    assert [r.delivery_id for r in results] == [e.delivery_id for e in sent]
    assert statuses(results) == [SENT] * 200
    assert sorted(m.recipients[0] for m in smtp_server.messages) == sorted(e.recipient for e in sent)
    assert smtp_server.max_open_connections == 4
    assert {m.connection for m in smtp_server.messages} == {1, 2, 3, 4}


def test_421_is_a_throttle_and_the_rest_of_the_chunk_waits_untried(smtp_server):
    smtp_server.fail_next(1, "421 4.7.0 Too many messages, closing connection", at="mail")
    with plain_transport(smtp_server, connections=1) as transport:
        results = transport.send_many(envelopes(5))
        assert statuses(results) == [TEMPORARY] * 5
        assert all(r.throttled and r.retry_after is None for r in results)
        assert results[0].code == 421
        assert [r.error.startswith("not sent yet, the server asked to slow down: 421") for r in results] == [
            False, True, True, True, True]
        assert smtp_server.messages == []
        assert smtp_server.connections == 1

        again = transport.send_many(envelopes(4, start=2))  # the next chunk, on a new connection

    assert statuses(again) == [SENT] * 4
    assert smtp_server.connections == 2


@pytest.mark.parametrize("reply, throttled", [
    ("421 4.3.0 Service shutting down, closing connection", True),
    ("451 4.7.1 Sending rate exceeded, try again later", True),
    ("450 4.7.0 Too many messages from this account", True),
    ("451 Ratelimit exceeded for this sender", True),
    ("452 Too many messages, slow down", True),
    ("451 4.3.0 Mail server temporarily rejected message", False),
    ("452 4.5.3 Too many recipients", False),
    ("450 4.2.0 Mailbox busy", False),
    ("550 5.7.1 Sending rate exceeded", False),  # a refusal for good is not a request to slow down
])
def test_which_replies_ask_to_slow_down(smtp_server, reply, throttled):
    smtp_server.fail_next(1, reply, at="rcpt")
    with plain_transport(smtp_server, connections=1) as transport:
        results = transport.send_many(envelopes(2))

    assert results[0].throttled is throttled
    assert results[1].throttled is throttled  # held back, untried, after a throttle
    assert statuses(results)[1] == (TEMPORARY if throttled else SENT)


def test_a_421_greeting_is_a_throttle_for_every_message_of_the_chunk():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def greet_and_close():
            conn, _ = listener.accept()
            conn.sendall(b"421 4.7.0 mx.example.net Too many connections, try again later\r\n")
            conn.close()

        thread = threading.Thread(target=greet_and_close, daemon=True)
        thread.start()
        with SmtpTransport("127.0.0.1", port, security="none", connections=1, timeout=5) as transport:
            results = transport.send_many(envelopes(3))
        thread.join(timeout=10)

    assert statuses(results) == [TEMPORARY] * 3
    assert all(r.throttled and r.code == 421 for r in results)
    assert "Too many connections" in results[0].error


def test_451_is_a_temporary_failure_and_the_connection_carries_on(smtp_server):
    smtp_server.fail_next(1, "451 4.3.0 Mail server temporarily rejected message")
    with plain_transport(smtp_server, connections=1) as transport:
        results = transport.send_many(envelopes(2))

    assert statuses(results) == [TEMPORARY, SENT]
    assert results[0].code == 451
    assert results[0].enhanced_code == "4.3.0"
    assert not results[0].hard_bounce
    assert [m.recipients for m in smtp_server.messages] == [["reader2@example.com"]]
    assert smtp_server.connections == 1


def test_an_unknown_recipient_is_a_hard_bounce_for_that_recipient_only(smtp_server):
    smtp_server.reject_recipients("reader2@example.com")
    with plain_transport(smtp_server, connections=1) as transport:
        results = transport.send_many(envelopes(3))

    assert statuses(results) == [SENT, PERMANENT, SENT]
    bounced = results[1]
    assert bounced.code == 550
    assert bounced.enhanced_code == "5.1.1"
    assert bounced.hard_bounce
    assert "reader2@example.com" in bounced.error
    assert sorted(m.recipients[0] for m in smtp_server.messages) == ["reader1@example.com", "reader3@example.com"]


def test_a_refused_sender_is_not_blamed_on_the_subscriber(smtp_server):
    smtp_server.fail_next(1, "553 5.1.8 Sender address rejected: Domain not found", at="mail")
    with plain_transport(smtp_server, connections=1) as transport:
        [result] = transport.send_many(envelopes(1))

    assert result.status == TEMPORARY
    assert not result.hard_bounce
    assert "bounces@example.org" in result.error


def test_a_line_dropped_after_the_data_makes_the_outcome_uncertain(smtp_server):
    smtp_server.drop_after_data(1)
    with plain_transport(smtp_server, connections=1) as transport:
        results = transport.send_many(envelopes(2))

    assert statuses(results) == [TEMPORARY, SENT]
    assert results[0].uncertain
    assert not results[1].uncertain
    # The server did take the first message: a retry would be a duplicate.
    assert [m.answered for m in smtp_server.messages] == [False, True]


def test_an_idle_connection_closed_by_the_server_is_replaced_without_a_failure(smtp_server):
    with plain_transport(smtp_server, connections=1) as transport:
        transport.send_many(envelopes(1))
        smtp_server.hang_up()
        results = transport.send_many(envelopes(2, start=2))

    assert statuses(results) == [SENT, SENT]
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 2


def test_starttls_with_a_trusted_certificate():
    with SmtpTestServer(tls="starttls") as server:
        with plain_transport(server, security="starttls", ssl_context=server.client_ssl_context()) as transport:
            results = transport.send_many(envelopes(2))

    assert statuses(results) == [SENT, SENT]
    assert all(m.tls for m in server.messages)


def test_implicit_tls_with_a_trusted_certificate():
    with SmtpTestServer(tls="implicit") as server:
        with plain_transport(server, security="tls", ssl_context=server.client_ssl_context()) as transport:
            results = transport.send_many(envelopes(2))

    assert statuses(results) == [SENT, SENT]
    assert all(m.tls for m in server.messages)


def test_an_untrusted_certificate_stops_everything_and_sends_nothing_in_plain_text():
    with SmtpTestServer(tls="starttls") as server:
        with plain_transport(server, security="starttls") as transport:  # verification on, system CAs only
            results = transport.send_many(envelopes(3))

    assert statuses(results) == [TEMPORARY] * 3
    assert all("certificate" in r.error and "SMTP_VERIFY_CERTIFICATES" in r.error for r in results)
    assert server.messages == []


def test_a_server_without_starttls_gets_nothing_when_starttls_is_configured(smtp_server):
    with plain_transport(smtp_server, security="starttls", connections=2) as transport:
        results = transport.send_many(envelopes(4))

    assert statuses(results) == [TEMPORARY] * 4
    assert all("does not offer STARTTLS" in r.error and "SMTP_SECURITY" in r.error for r in results)
    assert smtp_server.messages == []


def test_login_with_the_right_password():
    with SmtpTestServer(tls="starttls", users={"newsletter": "correct horse"}) as server:
        options = dict(security="starttls", ssl_context=server.client_ssl_context())
        with plain_transport(server, username="newsletter", password="correct horse", **options) as transport:
            results = transport.send_many(envelopes(2))

    assert statuses(results) == [SENT, SENT]
    assert [m.login for m in server.messages] == ["newsletter", "newsletter"]


def test_a_refused_login_fails_every_message_for_now_and_says_what_to_check():
    with SmtpTestServer(tls="starttls", users={"newsletter": "correct horse"}) as server:
        options = dict(security="starttls", ssl_context=server.client_ssl_context())
        with plain_transport(server, username="newsletter", password="wrong", **options) as transport:
            results = transport.send_many(envelopes(3))

    assert statuses(results) == [TEMPORARY] * 3
    assert all("SMTP_PASSWORD" in r.error and "wrong" not in r.error for r in results)
    assert results[0].code == 535
    assert server.messages == []


def test_an_unreachable_server_fails_every_message_for_now():
    transport = SmtpTransport("127.0.0.1", free_loopback_port(), security="none", timeout=5, connections=3)
    with transport:
        results = transport.send_many(envelopes(5))

    assert statuses(results) == [TEMPORARY] * 5
    assert all("cannot connect" in r.error for r in results)


class HangingUp:
    """A server that takes each connection and closes it before any greeting; counts them."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self.listener.getsockname()[1]
        self.connections = 0

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.listener.close()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def test_a_server_that_hangs_up_is_tried_once_per_connection_not_once_per_message():
    with HangingUp() as server:
        with plain_transport(server, connections=4) as transport:
            one = transport.send_many(envelopes(1))
            many = transport.send_many(envelopes(12, start=2))

    assert statuses(one + many) == [TEMPORARY] * 13
    assert all("cannot connect" in r.error or "Connection unexpectedly closed" in r.error for r in one + many)
    # The single message waits for one try, not one on each of the four connections.
    assert server.connections <= 1 + 4


def test_an_empty_chunk_sends_nothing(smtp_server):
    with plain_transport(smtp_server) as transport:
        assert transport.send_many([]) == []
    assert smtp_server.connections == 0


def test_the_transport_can_be_used_again_after_close(smtp_server):
    transport = plain_transport(smtp_server, connections=2)
    transport.send_many(envelopes(4))
    transport.close()
    results = transport.send_many(envelopes(4, start=5))
    transport.close()

    assert statuses(results) == [SENT] * 4
    assert len(smtp_server.messages) == 8


def test_make_transport_reads_the_smtp_settings(smtp_server):
    settings = settings_from({
        "TRANSPORT": "smtp",
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SMTP_CONNECTIONS": "1",
        "SMTP_MESSAGES_PER_CONNECTION": "2",
    })
    with make_transport(settings) as transport:
        results = transport.send_many(envelopes(3))

    assert statuses(results) == [SENT] * 3
    assert [m.connection for m in smtp_server.messages] == [1, 1, 2]


@pytest.mark.parametrize(
    "options",
    [{"security": "ssl"}, {"connections": 0}, {"messages_per_connection": 0}, {"timeout": 0}],
)
def test_unusable_settings_are_refused_up_front(options):
    with pytest.raises(TransportError):
        SmtpTransport("127.0.0.1", 25, **options)
