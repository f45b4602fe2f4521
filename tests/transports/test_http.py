"""The shared HTTP layer: pooling, timeouts, what answers mean, batches; and a send through it."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from newsletter.sending import scheduling
from newsletter.store.models import Delivery, Suppression
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, TransportError
from newsletter.transports.http import batches, retry_after_text, status_for
from newsletter.transports.postmark import PostmarkTransport
from newsletter.transports.sendgrid import SendGridTransport
from tests.fake_providers import (  # noqa: F401 (fixtures)
    POSTMARK_TOKEN,
    SENDGRID_KEY,
    postmark_server,
    sample_envelopes,
    sample_template,
    sendgrid_server,
)
from tests.sending.world import make_world, run_send, states


@pytest.mark.parametrize("code, status", [
    (429, TEMPORARY), (500, TEMPORARY), (503, TEMPORARY), (401, TEMPORARY), (403, TEMPORARY),
    (400, PERMANENT), (404, PERMANENT), (413, PERMANENT), (422, PERMANENT),
])
def test_what_an_error_status_means_for_the_recipients(code, status):
    assert status_for(code) == status


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_text("30") == " (the provider asks to retry after 30 seconds)"
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert retry_after_text(later) in {f" (the provider asks to retry after {s} seconds)" for s in (118, 119, 120)}
    assert retry_after_text("soon") == retry_after_text(None) == ""


def test_calls_reuse_one_pooled_connection(sendgrid_server):
    with SendGridTransport(SENDGRID_KEY, api_url=sendgrid_server.url) as transport:
        for start in (1, 3, 5):
            assert [r.status for r in transport.send_many(sample_envelopes(2, start=start))] == [SENT] * 2
    ports = {call.environ["REMOTE_PORT"] for call in sendgrid_server.calls}
    assert len(sendgrid_server.calls) == 3 and len(ports) == 1


def silent_server(answer=None):
    """A socket that takes the request and then says nothing (or hangs up)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        connection, _ = listener.accept()
        connection.recv(65536)
        if answer == "hang up":
            connection.close()
        else:
            threading.Event().wait(5)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_no_answer_after_the_request_went_out_is_temporary_and_uncertain():
    listener, url = silent_server()
    with listener, SendGridTransport(SENDGRID_KEY, api_url=url, read_timeout=0.3) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert [r.status for r in results] == [TEMPORARY] * 2
    assert all(r.uncertain and "after the request went out" in r.error for r in results)


def test_a_line_dropped_before_the_answer_is_uncertain():
    listener, url = silent_server("hang up")
    with listener, SendGridTransport(SENDGRID_KEY, api_url=url) as transport:
        results = transport.send_many(sample_envelopes(1))
    assert results[0].status == TEMPORARY and results[0].uncertain


def test_batches_keep_to_the_size_the_issue_and_one_address_each():
    first, second = sample_template(), sample_template(subject="Another issue")
    envelopes = sample_envelopes(5, first) + sample_envelopes(2, second, start=6) + sample_envelopes(1, second, start=6)
    sizes = [[e.delivery_id for e in batch] for batch in batches(envelopes, 2)]
    assert sizes == [[1, 2], [3, 4], [5], [6, 7], [6]]


def test_envelopes_without_their_template_are_refused_by_batch_providers():
    bare = Envelope(1, "news@example.org", "reader1@example.com", b"Subject: x\r\n\r\nx\r\n")
    with pytest.raises(TransportError, match="MessageTemplate.envelope"):
        list(batches([bare], 10))


def test_a_send_through_postmark_reaches_each_subscriber_once_and_suppresses_the_inactive(
    session, settings, postmark_server
):
    fast = replace(settings, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=7)
    _, mailing_list, issue = make_world(session, 12)
    send = scheduling.schedule_send(session, issue, mailing_list, None, batch_size=fast.batch_size)
    session.commit()
    postmark_server.refuse("reader004@example.com")
    postmark_server.throttle(retry_after="0")  # the first call is throttled; its rows are retried

    with PostmarkTransport(POSTMARK_TOKEN, api_url=postmark_server.url) as transport:
        run_send(session, fast, transport, send.id)

    assert states(session, send.id) == {"sent": 11, "failed": 1}
    delivered = sorted(d.to_email for d in postmark_server.delivered)
    assert delivered == sorted(f"reader{i:03d}@example.com" for i in range(12) if i != 4)
    ids = {d.to_email: d.provider_id for d in postmark_server.delivered}
    rows = session.scalars(select(Delivery).where(Delivery.send_id == send.id, Delivery.state == "sent")).all()
    assert {r.email: r.provider_message_id for r in rows} == ids
    suppressed = session.scalars(select(Suppression.email)).all()
    assert suppressed == ["reader004@example.com"]
