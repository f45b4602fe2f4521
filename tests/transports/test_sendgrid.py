from __future__ import annotations

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, TransportError
from newsletter.transports.sendgrid import SendGridTransport
from tests.conftest import free_port
from tests.fake_providers import (  # noqa: F401 (a fixture)
    SENDGRID_KEY,
    assert_each_reader_sees_what_build_gives,
    sample_envelopes,
    sample_template,
    sendgrid_server,
)


def transport_for(server, **options) -> SendGridTransport:
    return SendGridTransport(options.pop("api_key", SENDGRID_KEY), api_url=server.url, **options)


def statuses(results):
    return [r.status for r in results]


def test_each_reader_gets_the_issue_personalised_as_build_makes_it(sendgrid_server):
    envelopes = sample_envelopes(20)
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 20
    assert_each_reader_sees_what_build_gives(envelopes, sendgrid_server.delivered)
    assert len(sendgrid_server.calls) == 1
    assert {r.provider_message_id for r in results} == {d.provider_id for d in sendgrid_server.delivered}


def test_request_has_the_documented_shape(sendgrid_server):
    envelopes = sample_envelopes(3)
    with transport_for(sendgrid_server) as transport:
        transport.send_many(envelopes)

    call = sendgrid_server.calls[0]
    assert call.path == "/v3/mail/send"
    assert call.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    assert call.mimetype == "application/json"
    mail = sendgrid_server.bodies[0]
    assert mail["from"] == {"email": "news@example.org", "name": "Together We're Better"}
    assert mail["reply_to"] == {"email": "editor@example.org"}
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]
    assert mail["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    first, second = mail["personalizations"][:2]
    assert first["to"] == [{"email": "reader1@example.com"}]  # no name known
    assert second["to"] == [{"email": "reader2@example.com", "name": "Zoë Müller"}]
    assert first["custom_args"] == {"delivery_id": "1"}
    assert first["headers"]["Message-ID"] == envelopes[0].message_id
    # The HTML's value is escaped, the text's is not: two keys for one placeholder.
    assert first["substitutions"]["%%unsubscribe_url.html%%"].endswith("send=7&amp;reader=1")
    assert first["substitutions"]["%%unsubscribe_url.text%%"].endswith("send=7&reader=1")


def test_2500_recipients_take_three_calls_of_at_most_1000(sendgrid_server):
    envelopes = sample_envelopes(2500)
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 2500
    assert [len(b["personalizations"]) for b in sendgrid_server.bodies] == [1000, 1000, 500]
    assert len({d.to_email for d in sendgrid_server.delivered}) == 2500


def test_a_smaller_batch_size_is_honoured(sendgrid_server):
    with transport_for(sendgrid_server, batch_size=4) as transport:
        transport.send_many(sample_envelopes(10))
    assert [len(b["personalizations"]) for b in sendgrid_server.bodies] == [4, 4, 2]


def test_a_new_issue_starts_a_new_call(sendgrid_server):
    other = sample_template(subject="October 2021")
    envelopes = sample_envelopes(2) + sample_envelopes(2, template=other, start=3)
    with transport_for(sendgrid_server) as transport:
        assert statuses(transport.send_many(envelopes)) == [SENT] * 4
    assert [b["subject"] for b in sendgrid_server.bodies] == ["Together We’re Better – September 2021", "October 2021"]


def test_throttling_is_temporary_and_says_when_to_retry(sendgrid_server):
    sendgrid_server.throttle(retry_after="30")
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(sample_envelopes(3))

    assert statuses(results) == [TEMPORARY] * 3
    assert all(r.code == 429 and "retry after 30 seconds" in r.error for r in results)
    assert all(r.throttled and r.retry_after == 30 for r in results)
    assert sendgrid_server.delivered == []


def test_after_a_429_the_calls_left_in_the_chunk_are_held_back(sendgrid_server):
    sendgrid_server.throttle(retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    with transport_for(sendgrid_server, batch_size=2) as transport:
        results = transport.send_many(sample_envelopes(5))

    assert statuses(results) == [TEMPORARY] * 5
    assert all(r.throttled for r in results)
    assert results[0].retry_after > 3600  # an HTTP date, in seconds from now
    assert ["not sent yet" in r.error for r in results] == [False, False, True, True, True]
    assert len(sendgrid_server.calls) == 1


def test_a_refused_address_fails_alone_and_the_others_are_retried(sendgrid_server):
    sendgrid_server.refuse("reader2@example.com")
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(sample_envelopes(3))

    assert statuses(results) == [TEMPORARY, PERMANENT, TEMPORARY]
    assert "Does not contain a valid address" in results[1].error
    assert sendgrid_server.delivered == []  # SendGrid takes all of a call or none of it


def test_a_bad_request_for_the_whole_call_fails_every_recipient(sendgrid_server):
    sendgrid_server.answer_next(400, {"errors": [{"field": "from.email", "message": "does not match a verified Sender Identity"}]})
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [PERMANENT] * 2
    assert all("verified Sender Identity" in r.error for r in results)


def test_server_errors_are_temporary(sendgrid_server):
    sendgrid_server.answer_next(503, {"errors": [{"field": None, "message": "unavailable"}]})
    with transport_for(sendgrid_server) as transport:
        results = transport.send_many(sample_envelopes(2))
        assert statuses(results) == [TEMPORARY] * 2
        assert statuses(transport.send_many(sample_envelopes(2))) == [SENT] * 2


def test_a_wrong_key_is_temporary_and_names_the_setting(sendgrid_server):
    with transport_for(sendgrid_server, api_key="SG.wrong") as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all(r.code == 401 and "SENDGRID_API_KEY" in r.error for r in results)


def test_a_server_that_is_down_is_temporary_and_certain():
    transport = SendGridTransport(SENDGRID_KEY, api_url=f"http://127.0.0.1:{free_port()}")
    results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all("cannot connect" in r.error and not r.uncertain for r in results)


def test_make_transport_reads_the_sendgrid_settings(sendgrid_server):
    settings = settings_from({"TRANSPORT": "sendgrid", "SENDGRID_API_KEY": SENDGRID_KEY,
                              "SENDGRID_API_URL": sendgrid_server.url, "SENDGRID_BATCH_SIZE": "2"})
    with make_transport(settings) as transport:
        assert statuses(transport.send_many(sample_envelopes(3))) == [SENT] * 3
    assert len(sendgrid_server.calls) == 2


def test_settings_sendgrid_cannot_use_are_refused():
    with pytest.raises(TransportError, match="SENDGRID_API_KEY"):
        make_transport(settings_from({"TRANSPORT": "sendgrid"}))
    with pytest.raises(TransportError, match="SENDGRID_BATCH_SIZE=1001"):
        make_transport(settings_from({"TRANSPORT": "sendgrid", "SENDGRID_API_KEY": "k", "SENDGRID_BATCH_SIZE": "1001"}))
