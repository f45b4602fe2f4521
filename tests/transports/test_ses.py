"""SES v2 through boto3 against moto's server on loopback (and a proxy that can fail calls)."""

from __future__ import annotations

import json

import boto3
import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, TransportError
from newsletter.transports.ses import SesTransport
from tests.conftest import free_port
from tests.fake_providers import (  # noqa: F401 (fixtures)
    moto_server,
    sample_envelopes,
    ses_raw_messages,
    ses_server,
    view_of_message,
)

REGION = "eu-west-1"
CREDENTIALS = dict(access_key_id="testing", secret_access_key="testing")


@pytest.fixture
def verified(moto_server):
    """The sending domain verified in SES, as it must be before anything is sent."""
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=moto_server,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_email_identity(EmailIdentity="example.org")


def transport_for(server, **options) -> SesTransport:
    return SesTransport(REGION, endpoint_url=server.url, **CREDENTIALS, **options)


def statuses(results):
    return [r.status for r in results]


def test_each_message_goes_out_as_the_bytes_build_makes(ses_server, verified, moto_server):
    envelopes = sample_envelopes(12)
    with transport_for(ses_server, connections=4) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 12
    stored = {m["id"]: m for m in ses_raw_messages(moto_server)}
    assert len(stored) == 12
    for envelope, result in zip(envelopes, results):
        message = stored[result.provider_message_id]  # results are in the envelopes' order
        assert envelope.recipient in message["destinations"]
        assert message["raw"] == envelope.message
        seen = view_of_message(message["raw"]).seen()
        assert seen == view_of_message(envelope.template.build(envelope.person)).seen()


def test_each_call_is_a_raw_send_email_tagged_with_its_ledger_row(ses_server, verified):
    envelope = sample_envelopes(1)[0]
    with transport_for(ses_server, configuration_set="newsletter-events") as transport:
        transport.send_many([envelope])

    [call] = [c for c in ses_server.calls if c.path == "/v2/email/outbound-emails"]
    body = json.loads(call.get_data())
    assert body["Destination"] == {"ToAddresses": ["reader1@example.com"]}
    assert "Raw" in body["Content"]
    assert body["EmailTags"] == [{"Name": "delivery_id", "Value": "1"}]
    assert body["ConfigurationSetName"] == "newsletter-events"
    assert call.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")


def test_throttling_is_temporary_and_holds_back_the_calls_not_yet_made(ses_server, verified):
    ses_server.throttle_address("reader2@example.com")
    with transport_for(ses_server, connections=1) as transport:
        results = transport.send_many(sample_envelopes(3))

    assert statuses(results) == [SENT, TEMPORARY, TEMPORARY]
    assert results[1].code == 429 and "TooManyRequestsException" in results[1].error
    assert results[1].throttled and results[2].throttled
    assert "not sent yet" in results[2].error
    # botocore did not retry it behind the ledger's back, and reader 3 waits untried
    throttled = [c for c in ses_server.calls if b"reader2@example.com" in c.get_data()]
    assert len(throttled) == 1
    assert not [c for c in ses_server.calls if b"reader3@example.com" in c.get_data()]


def test_a_rejected_message_fails_for_good(ses_server, verified):
    ses_server.refuse("reader3@example.com")
    with transport_for(ses_server) as transport:
        results = transport.send_many(sample_envelopes(3))
    assert statuses(results) == [SENT, SENT, PERMANENT]
    assert "MessageRejected" in results[2].error


def test_an_unverified_sender_is_rejected_by_ses(ses_server):
    with transport_for(ses_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [PERMANENT] * 2
    assert all("MessageRejected" in r.error for r in results)


def test_ses_server_errors_are_temporary(ses_server, verified):
    ses_server.answer_next(503, {"message": "Service unavailable"},
                           {"x-amzn-ErrorType": "ServiceUnavailableException:"})
    with transport_for(ses_server, connections=1) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY, SENT]


def test_an_endpoint_that_is_down_is_temporary_and_certain():
    transport = SesTransport(REGION, endpoint_url=f"http://127.0.0.1:{free_port()}", **CREDENTIALS)
    results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all("cannot connect to SES" in r.error and not r.uncertain for r in results)


def test_make_transport_reads_the_ses_settings(ses_server, verified):
    settings = settings_from({"TRANSPORT": "ses", "SES_REGION": REGION, "SES_ENDPOINT_URL": ses_server.url,
                              "SES_ACCESS_KEY_ID": "testing", "SES_SECRET_ACCESS_KEY": "testing"})
    with make_transport(settings) as transport:
        assert statuses(transport.send_many(sample_envelopes(2))) == [SENT] * 2


def test_ses_without_a_region_is_refused():
    with pytest.raises(TransportError, match="SES_REGION"):
        make_transport(settings_from({"TRANSPORT": "ses"}))
