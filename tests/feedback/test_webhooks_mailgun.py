"""Mailgun: HMAC-SHA256 of timestamp + token, a timestamp window, each token with one body."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace

import pytest

from newsletter.web import create_app
from newsletter.feedback.webhooks.mailgun import signature_of
from tests.feedback.webhook_checks import assert_replay_changes_nothing, event_count, lift_suppressions, suppressed

URL = "/webhooks/mailgun"
KEY = "key-0123456789abcdef"


@pytest.fixture
def client(settings):
    return create_app(replace(settings, mailgun_webhook_signing_key=KEY)).test_client()


def body(event_data, *, timestamp=None, token=None, key=KEY):
    timestamp = str(int(timestamp if timestamp is not None else time.time()))
    token = token or secrets.token_hex(25)
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature_of(key, timestamp, token)},
                       "event-data": event_data})


def failed(address, severity="permanent", event_id="ev1"):
    return {"event": "failed", "severity": severity, "recipient": address, "id": event_id, "timestamp": time.time(),
            "reason": "bounce", "delivery-status": {"code": 550, "description": "No such user"},
            "message": {"headers": {"message-id": "20261120.1@example.org"}}}


def test_a_signed_permanent_failure_suppresses(client, settings):
    response = client.post(URL, data=body(failed("gone@example.com")), content_type="application/json")

    assert response.status_code == 200
    assert suppressed(settings) == {"gone@example.com": "hard_bounce"}


def test_an_exact_replay_gets_200_and_changes_nothing(client, settings):
    request = body(failed("gone@example.com"))
    first = client.post(URL, data=request)
    lift_suppressions(settings)

    replay = client.post(URL, data=request)

    assert_replay_changes_nothing(settings, first, replay)
    assert event_count(settings) == 1


def test_a_token_seen_before_on_other_events_is_refused(client, settings):
    """The signature covers the timestamp and token, not the events: a captured
    token must not carry someone else's bounce."""
    request = json.loads(body(failed("gone@example.com")))
    assert client.post(URL, data=json.dumps(request)).status_code == 200
    lift_suppressions(settings)

    request["event-data"] = failed("victim@example.com", event_id="ev-forged")
    forged = client.post(URL, data=json.dumps(request))

    assert forged.status_code == 403 and "another body" in forged.get_data(as_text=True)
    assert suppressed(settings) == {} and event_count(settings) == 1


def test_the_same_request_with_its_json_written_differently_is_still_a_replay(client, settings):
    request = json.loads(body(failed("gone@example.com")))
    first = client.post(URL, data=json.dumps(request))
    lift_suppressions(settings)

    replay = client.post(URL, data=json.dumps(request, indent=2, sort_keys=True))

    assert_replay_changes_nothing(settings, first, replay)


def test_a_refused_request_does_not_use_up_its_token(client, settings):
    token = secrets.token_hex(25)
    forged = json.loads(body(failed("x@example.com"), token=token))
    forged["signature"]["signature"] = "0" * 64
    assert client.post(URL, data=json.dumps(forged)).status_code == 403

    assert client.post(URL, data=body(failed("x@example.com"), token=token)).status_code == 200


def test_forged_stale_and_unsigned_requests_are_refused(client, settings):
    assert client.post(URL, data=body(failed("a@example.com"), key="key-wrong")).status_code == 403
    assert client.post(URL, data=body(failed("b@example.com"), timestamp=time.time() - 3 * 24 * 3600)).status_code == 403
    assert client.post(URL, data=json.dumps({"event-data": failed("c@example.com")})).status_code == 403
    assert suppressed(settings) == {} and event_count(settings) == 0


def test_temporary_failures_are_soft_and_other_events_ignored(client, settings):
    client.post(URL, data=body(failed("full@example.com", "temporary", "t1")))
    client.post(URL, data=body({"event": "opened", "recipient": "r@example.com", "id": "o1", "timestamp": time.time()}))

    assert suppressed(settings) == {}
    assert event_count(settings) == 1


def test_a_malformed_signed_body_gets_a_400(client):
    response = client.post(URL, data=body({"event": "failed"}))
    assert response.status_code == 400
    assert client.post(URL, data=b"not json").status_code == 400
