"""SES through SNS: only signed messages of our topic, with certificates from SNS hosts."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import ProviderEvent
from newsletter.web import create_app
from newsletter.feedback.webhooks.ses_sns import SnsFetcher, canonical_string, is_sns_url
from tests.feedback.webhook_checks import assert_replay_changes_nothing, event_count, lift_suppressions, suppressed

TOPIC = "arn:aws:sns:eu-west-1:123456789012:newsletter-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=abc"


@pytest.fixture(scope="module")
def signing_key():
    """A certificate of our own standing in for SNS's: no network in tests."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


class RecordingGet:
    def __init__(self, pem: bytes):
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem


@pytest.fixture
def world(settings, signing_key):
    get = RecordingGet(signing_key[1])
    app = create_app(replace(settings, sns_topic_arns=(TOPIC,)))
    app.config["WEBHOOK_OPTIONS"] = {"ses": {"fetcher": SnsFetcher(get)}}
    return app.test_client(), get, settings


def signed(key, envelope: dict, **changes) -> bytes:
    envelope = {"SignatureVersion": "2", "SigningCertURL": CERT_URL, "TopicArn": TOPIC,
                "Timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"), **envelope}
    signature = key.sign(canonical_string(envelope), padding.PKCS1v15(), hashes.SHA256())
    envelope["Signature"] = base64.b64encode(signature).decode()
    envelope.update(changes)  # after signing: what a forger would change
    return json.dumps(envelope).encode()


def bounce(message_id="sns-1", address="reader@example.com", bounce_type="Permanent") -> dict:
    ses = {
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": "General", "timestamp": "2026-11-20T10:00:00.000Z",
                   "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"messageId": "0102018c-ses-id", "commonHeaders": {"messageId": "<other@example.org>"}},
    }
    return {"Type": "Notification", "MessageId": message_id, "Message": json.dumps(ses)}


def test_a_signed_hard_bounce_suppresses_the_address(world, signing_key):
    client, get, settings = world

    response = client.post("/webhooks/ses", data=signed(signing_key[0], bounce()))

    assert response.status_code == 200
    assert response.get_json() == {"recorded": 1, "duplicates": 0}
    assert suppressed(settings) == {"reader@example.com": "hard_bounce"}
    assert get.urls == [CERT_URL]


def test_the_certificate_is_fetched_once_and_a_replay_changes_nothing(world, signing_key):
    client, get, settings = world
    body = signed(signing_key[0], bounce())

    client.post("/webhooks/ses", data=signed(signing_key[0], bounce("sns-0", "first@example.com")))
    again = [client.post("/webhooks/ses", data=body) for _ in range(2)]

    assert [r.get_json() for r in again] == [{"recorded": 1, "duplicates": 0}, {"recorded": 0, "duplicates": 1}]
    assert get.urls == [CERT_URL]
    assert event_count(settings) == 2


def test_an_exact_replay_gets_200_and_changes_nothing(world, signing_key):
    client, get, settings = world
    body = signed(signing_key[0], bounce())
    first = client.post("/webhooks/ses", data=body)
    lift_suppressions(settings)

    replay = client.post("/webhooks/ses", data=body)

    assert_replay_changes_nothing(settings, first, replay)
    assert event_count(settings) == 1


@pytest.mark.parametrize("change", [
    {"Message": json.dumps({"notificationType": "Bounce"})},  # altered after signing
    {"Signature": base64.b64encode(b"x" * 256).decode()},
    {"Signature": "not base64!"},
])
def test_a_forged_message_is_refused_and_changes_nothing(world, signing_key, change):
    client, _, settings = world

    response = client.post("/webhooks/ses", data=signed(signing_key[0], bounce(), **change))

    assert response.status_code == 403
    assert suppressed(settings) == {} and event_count(settings) == 0


def test_a_message_signed_by_another_key_is_refused(world):
    client, _, settings = world
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert client.post("/webhooks/ses", data=signed(other, bounce())).status_code == 403
    assert event_count(settings) == 0


@pytest.mark.parametrize("url", [
    "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    "http://sns.eu-west-1.amazonaws.com/cert.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
    "https://s3.amazonaws.com/cert.pem",
])
def test_a_certificate_off_the_sns_hosts_is_never_fetched(world, signing_key, url):
    client, get, settings = world

    response = client.post("/webhooks/ses", data=signed(signing_key[0], bounce(), SigningCertURL=url))

    assert response.status_code == 403
    assert get.urls == []
    assert not is_sns_url(url)
    assert event_count(settings) == 0


def test_sns_hosts_of_every_region_are_accepted():
    assert is_sns_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
    assert is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")


def test_another_topic_is_refused_before_anything_is_fetched(world, signing_key):
    client, get, _ = world

    response = client.post("/webhooks/ses", data=signed(signing_key[0], bounce(), TopicArn="arn:aws:sns:eu-west-1:1:other"))

    assert response.status_code == 403 and get.urls == []


def test_signature_version_1_and_stale_messages_are_refused(world, signing_key):
    client, _, settings = world
    old = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()

    assert client.post("/webhooks/ses", data=signed(signing_key[0], {**bounce(), "SignatureVersion": "1"})).status_code == 403
    assert client.post("/webhooks/ses", data=signed(signing_key[0], {**bounce(), "Timestamp": old})).status_code == 403
    assert event_count(settings) == 0


def test_a_subscription_is_confirmed_only_on_an_sns_host(world, signing_key):
    client, get, _ = world
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": "c1", "Token": "abc", "Message": "confirm",
                    "SubscribeURL": SUBSCRIBE_URL}

    assert client.post("/webhooks/ses", data=signed(signing_key[0], confirmation)).status_code == 200
    assert get.urls == [CERT_URL, SUBSCRIBE_URL]

    evil = {**confirmation, "MessageId": "c2", "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription"}
    assert client.post("/webhooks/ses", data=signed(signing_key[0], evil)).status_code == 403
    assert get.urls == [CERT_URL, SUBSCRIBE_URL]


def test_malformed_bodies_get_a_400_without_a_trace(world, signing_key):
    client, _, _ = world
    broken = {"Type": "Notification", "MessageId": "m", "Message": json.dumps({"notificationType": "Bounce"})}

    for body in (b"{not json", b"[]", signed(signing_key[0], broken)):
        response = client.post("/webhooks/ses", data=body)
        assert response.status_code == 400
        assert "Traceback" not in response.get_data(as_text=True)


def test_soft_bounces_and_complaints_are_normalised(world, signing_key):
    client, _, settings = world
    complaint = {"notificationType": "Complaint", "mail": {"messageId": "m2"},
                 "complaint": {"timestamp": "2026-11-20T10:00:00Z", "complaintFeedbackType": "abuse",
                               "complainedRecipients": [{"emailAddress": "angry@example.com"}]}}

    client.post("/webhooks/ses", data=signed(signing_key[0], bounce("s1", "full@example.com", "Transient")))
    client.post("/webhooks/ses", data=signed(signing_key[0], {"Type": "Notification", "MessageId": "c", "Message": json.dumps(complaint)}))

    assert suppressed(settings) == {"angry@example.com": "complaint"}
    with session_scope(settings) as session:
        assert session.scalar(select(ProviderEvent.bounce).where(ProviderEvent.email == "full@example.com")) == "soft"
