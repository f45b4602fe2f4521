"""SendGrid's signed event webhook: ECDSA P-256 over timestamp + body."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.web import create_app
from tests.feedback.webhook_checks import assert_replay_changes_nothing, event_count, lift_suppressions, suppressed

URL = "/webhooks/sendgrid"


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def world(settings, key):
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    app = create_app(replace(settings, sendgrid_webhook_public_key=base64.b64encode(der).decode()))
    return app.test_client(), settings


def post(client, key, items, *, timestamp=None, body=None):
    body = body if body is not None else json.dumps(items).encode()
    timestamp = str(int(timestamp if timestamp is not None else time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return client.post(URL, data=body, headers={
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    })


def item(event, email, sg_event_id, **extra):
    return {"email": email, "timestamp": int(time.time()), "event": event, "sg_event_id": sg_event_id,
            "sg_message_id": "abc123.filter0001.1.2.3", "smtp-id": "<x@example.org>", **extra}


def test_signed_events_are_normalised_and_applied(world, key):
    client, settings = world
    items = [
        item("delivered", "ok@example.com", "e1"),
        item("bounce", "gone@example.com", "e2", type="bounce", status="5.1.1"),
        item("bounce", "blocked@example.com", "e3", type="blocked", status="4.7.1"),
        item("spamreport", "angry@example.com", "e4"),
        item("open", "ok@example.com", "e5"),
        item("deferred", "slow@example.com", "e6"),
    ]

    response = post(client, key, items)

    assert response.status_code == 200
    assert response.get_json() == {"recorded": 4, "duplicates": 0}
    assert suppressed(settings) == {"gone@example.com": "hard_bounce", "angry@example.com": "complaint"}


def test_a_replayed_batch_changes_nothing(world, key):
    client, settings = world
    items = [item("bounce", "gone@example.com", "e2", type="bounce")]
    post(client, key, items)

    assert post(client, key, items).get_json() == {"recorded": 0, "duplicates": 1}
    assert event_count(settings) == 1


def test_an_exact_replay_gets_200_and_changes_nothing(world, key):
    client, settings = world
    body = json.dumps([item("bounce", "gone@example.com", "e2", type="bounce")]).encode()
    timestamp = str(int(time.time()))
    headers = {"X-Twilio-Email-Event-Webhook-Signature":
               base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode(),
               "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}
    first = client.post(URL, data=body, headers=headers)
    lift_suppressions(settings)

    replay = client.post(URL, data=body, headers=headers)

    assert_replay_changes_nothing(settings, first, replay)
    assert event_count(settings) == 1


def test_forged_stale_and_unsigned_requests_are_refused(world, key):
    client, settings = world
    items = [item("bounce", "victim@example.com", "f1", type="bounce")]
    other = ec.generate_private_key(ec.SECP256R1())
    signed = post(client, key, items)  # noqa: F841 - a genuine one, to tamper with below
    timestamp = str(int(time.time()))
    good_signature = base64.b64encode(key.sign(timestamp.encode() + b"[]", ec.ECDSA(hashes.SHA256()))).decode()

    tampered = client.post(URL, data=json.dumps([item("bounce", "other@example.com", "f2", type="bounce")]),
                           headers={"X-Twilio-Email-Event-Webhook-Signature": good_signature,
                                    "X-Twilio-Email-Event-Webhook-Timestamp": timestamp})
    assert tampered.status_code == 403
    assert post(client, other, [item("bounce", "x@example.com", "f3", type="bounce")]).status_code == 403
    assert post(client, key, items, timestamp=time.time() - 3 * 24 * 3600).status_code == 403
    assert client.post(URL, data=json.dumps(items)).status_code == 403
    assert set(suppressed(settings)) == {"victim@example.com"}


def test_a_malformed_signed_body_gets_a_400(world, key):
    client, _ = world
    for body in (b"{not json", b'{"an": "object"}', json.dumps([{"event": "bounce"}]).encode()):
        response = post(client, key, None, body=body)
        assert response.status_code == 400
        assert "Traceback" not in response.get_data(as_text=True)


def test_an_unconfigured_webhook_is_not_there(settings):
    assert create_app(settings).test_client().post(URL, data=b"[]").status_code == 404
