from __future__ import annotations

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, TransportError
from newsletter.transports.postmark import PostmarkTransport
from tests.conftest import free_port
from tests.fake_providers import (  # noqa: F401 (a fixture)
    POSTMARK_TOKEN,
    assert_each_reader_sees_what_build_gives,
    postmark_server,
    sample_envelopes,
)


def transport_for(server, **options) -> PostmarkTransport:
    return PostmarkTransport(options.pop("token", POSTMARK_TOKEN), api_url=server.url, **options)


def statuses(results):
    return [r.status for r in results]


def test_each_reader_gets_the_issue_personalised_as_build_makes_it(postmark_server):
    envelopes = sample_envelopes(20)
    with transport_for(postmark_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 20
    assert_each_reader_sees_what_build_gives(envelopes, postmark_server.delivered)
    ids = {d.to_email: d.provider_id for d in postmark_server.delivered}
    assert [r.provider_message_id for r in results] == [ids[e.recipient] for e in envelopes]


def test_request_has_the_documented_shape(postmark_server):
    envelopes = sample_envelopes(2)
    with transport_for(postmark_server) as transport:
        transport.send_many(envelopes)

    call = postmark_server.calls[0]
    assert call.path == "/email/batch"
    assert call.headers["X-Postmark-Server-Token"] == POSTMARK_TOKEN
    assert call.headers["Accept"] == "application/json"
    first, second = postmark_server.bodies[0]
    assert first["To"] == "reader1@example.com"
    assert second["To"] == "Zoë Müller <reader2@example.com>"
    assert first["From"] == "Together We're Better <news@example.org>"
    assert first["ReplyTo"] == "editor@example.org"
    assert first["MessageStream"] == "broadcast"
    assert first["Metadata"] == {"delivery_id": "1"}
    headers = {h["Name"]: h["Value"] for h in first["Headers"]}
    assert headers["List-Unsubscribe"] == "<https://newsletter.example.org/unsubscribe?send=7&reader=1>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_2500_recipients_take_five_batches_of_500(postmark_server):
    envelopes = sample_envelopes(2500)
    with transport_for(postmark_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 2500
    assert [len(b) for b in postmark_server.bodies] == [500] * 5
    assert len({d.to_email for d in postmark_server.delivered}) == 2500


def test_an_inactive_recipient_fails_for_good_like_a_hard_bounce(postmark_server):
    postmark_server.refuse("reader2@example.com")
    with transport_for(postmark_server) as transport:
        results = transport.send_many(sample_envelopes(3))

    assert statuses(results) == [SENT, PERMANENT, SENT]
    assert results[1].hard_bounce  # so the sender suppresses the address
    assert "inactive" in results[1].error
    assert sorted(d.to_email for d in postmark_server.delivered) == ["reader1@example.com", "reader3@example.com"]


def test_throttling_is_temporary_and_says_when_to_retry(postmark_server):
    postmark_server.throttle(retry_after="12")
    with transport_for(postmark_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all(r.code == 429 and "retry after 12 seconds" in r.error for r in results)


def test_server_errors_are_temporary_and_invalid_calls_permanent(postmark_server):
    postmark_server.answer_next(500, {"ErrorCode": 100, "Message": "Maintenance"})
    postmark_server.answer_next(422, {"ErrorCode": 300, "Message": "Invalid email request"})
    with transport_for(postmark_server) as transport:
        assert statuses(transport.send_many(sample_envelopes(1))) == [TEMPORARY]
        refused = transport.send_many(sample_envelopes(1))
    assert statuses(refused) == [PERMANENT]
    assert "Invalid email request" in refused[0].error


def test_a_wrong_token_is_temporary_and_names_the_setting(postmark_server):
    with transport_for(postmark_server, token="wrong") as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all("POSTMARK_SERVER_TOKEN" in r.error for r in results)


def test_a_server_that_is_down_is_temporary():
    transport = PostmarkTransport(POSTMARK_TOKEN, api_url=f"http://127.0.0.1:{free_port()}")
    results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert not any(r.uncertain for r in results)


def test_an_answer_missing_entries_leaves_those_messages_uncertain(postmark_server):
    postmark_server.answer_next(200, [{"ErrorCode": 0, "Message": "OK", "MessageID": "m-1", "To": "x"}])
    with transport_for(postmark_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [SENT, TEMPORARY]
    assert results[1].uncertain


def test_make_transport_reads_the_postmark_settings(postmark_server):
    settings = settings_from({"TRANSPORT": "postmark", "POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
                              "POSTMARK_API_URL": postmark_server.url, "POSTMARK_MESSAGE_STREAM": "newsletters"})
    with make_transport(settings) as transport:
        assert statuses(transport.send_many(sample_envelopes(2))) == [SENT] * 2
    assert {d.tags["stream"] for d in postmark_server.delivered} == {"newsletters"}


def test_settings_postmark_cannot_use_are_refused():
    with pytest.raises(TransportError, match="POSTMARK_SERVER_TOKEN"):
        make_transport(settings_from({"TRANSPORT": "postmark"}))
    with pytest.raises(TransportError, match="POSTMARK_BATCH_SIZE=501"):
        make_transport(settings_from({"TRANSPORT": "postmark", "POSTMARK_SERVER_TOKEN": "t", "POSTMARK_BATCH_SIZE": "501"}))
