"""Postmark: basic auth with the credentials from settings."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from newsletter.web import create_app
from tests.feedback.webhook_checks import assert_replay_changes_nothing, event_count, lift_suppressions, suppressed

URL = "/webhooks/postmark"


@pytest.fixture
def client(settings):
    return create_app(replace(settings, postmark_webhook_username="postmark", postmark_webhook_password="s3cret-pass")).test_client()


def auth(user="postmark", password="s3cret-pass"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BOUNCE = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1,
          "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": "gone@example.com",
          "BouncedAt": "2026-11-20T16:33:54.9070259Z", "Description": "The server was unable to deliver your message"}


def test_an_authenticated_hard_bounce_suppresses(client, settings):
    response = client.post(URL, data=json.dumps(BOUNCE), headers=auth())

    assert response.status_code == 200
    assert suppressed(settings) == {"gone@example.com": "hard_bounce"}


def test_an_exact_replay_gets_200_and_changes_nothing(client, settings):
    first = client.post(URL, data=json.dumps(BOUNCE), headers=auth())
    lift_suppressions(settings)

    replay = client.post(URL, data=json.dumps(BOUNCE), headers=auth())

    assert_replay_changes_nothing(settings, first, replay)
    assert event_count(settings) == 1


@pytest.mark.parametrize("headers", [{}, auth(password="wrong"), auth(user="other"), {"Authorization": "Bearer s3cret-pass"},
                                     {"Authorization": "Basic !!!"}])
def test_wrong_or_missing_credentials_get_401_and_change_nothing(client, settings, headers):
    assert client.post(URL, data=json.dumps(BOUNCE), headers=headers).status_code == 401
    assert event_count(settings) == 0


def test_a_spam_complaint_and_a_delivery(client, settings):
    complaint = {**BOUNCE, "RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 2, "Email": "angry@example.com"}
    delivery = {"RecordType": "Delivery", "MessageID": "m-9", "Recipient": "fine@example.com",
                "DeliveredAt": "2026-11-20T16:33:54Z", "Details": "250 OK"}

    for payload in (complaint, delivery):
        assert client.post(URL, data=json.dumps(payload), headers=auth()).status_code == 200

    assert suppressed(settings) == {"angry@example.com": "complaint"}


def test_a_reactivation_in_postmark_never_lifts_our_suppression(client, settings):
    client.post(URL, data=json.dumps(BOUNCE), headers=auth())
    reactivated = {"RecordType": "SubscriptionChange", "MessageID": BOUNCE["MessageID"], "Recipient": "gone@example.com",
                   "SuppressSending": False, "SuppressionReason": None, "ChangedAt": "2026-11-21T10:00:00Z"}

    assert client.post(URL, data=json.dumps(reactivated), headers=auth()).status_code == 200
    assert suppressed(settings) == {"gone@example.com": "hard_bounce"}


def test_a_malformed_body_gets_a_400(client):
    for body in (b"nope", json.dumps({"RecordType": "Bounce"}).encode()):
        response = client.post(URL, data=body, headers=auth())
        assert response.status_code == 400
        assert "Traceback" not in response.get_data(as_text=True)
