from __future__ import annotations

import time
from dataclasses import replace

import pytest
from itsdangerous import URLSafeTimedSerializer

from newsletter.audience import tokens
from newsletter.config import Settings
from newsletter.errors import NewsletterError
from newsletter.audience.tokens import BadToken, make_token, preferences_url, read_token, unsubscribe_url

BASE_URL = "https://newsletter.example.org"


@pytest.fixture
def settings(tmp_path) -> Settings:
    # Tokens need keys and a base URL, not a database.
    return Settings(data_dir=tmp_path, secret_keys=("key-2024",), base_url=BASE_URL)


@pytest.mark.parametrize(
    "purpose, payload",
    [("confirm", {"email": "ann@example.org", "list": 3}), ("unsubscribe", [7, 42]), ("preferences", 42)],
)
def test_round_trip_per_purpose(settings, purpose, payload):
    token = make_token(settings, purpose, payload)
    assert read_token(settings, purpose, token) == payload


@pytest.mark.parametrize("made_for, read_as", [("unsubscribe", "preferences"), ("preferences", "confirm"),
                                               ("confirm", "unsubscribe"), ("unsubscribe", "confirm")])
def test_token_for_one_purpose_fails_for_another(settings, made_for, read_as):
    token = make_token(settings, made_for, 42)
    with pytest.raises(BadToken):
        read_token(settings, read_as, token)


def test_tampered_token_fails(settings):
    token = make_token(settings, "unsubscribe", [7, 42])
    forged = make_token(settings, "unsubscribe", [7, 43]).split(".")[0] + "." + token.split(".")[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, flipped, token + "x", "", "not-a-token"):
        with pytest.raises(BadToken) as caught:
            read_token(settings, "unsubscribe", bad)
        assert not caught.value.expired


def test_bad_token_is_a_newsletter_error():
    assert issubclass(BadToken, NewsletterError)


def test_rotated_key_still_verifies_old_tokens_and_newest_signs(settings):
    old_token = make_token(settings, "preferences", 42)
    rotated = replace(settings, secret_keys=("key-2025", "key-2024"))
    assert read_token(rotated, "preferences", old_token) == 42

    new_token = make_token(rotated, "preferences", 42)
    # Signed with the newest key: an install that only knows the new key reads it...
    assert read_token(replace(settings, secret_keys=("key-2025",)), "preferences", new_token) == 42
    # ...and one that only knows the old key does not.
    with pytest.raises(BadToken):
        read_token(settings, "preferences", new_token)


def test_token_signed_with_unknown_key_fails(settings):
    token = make_token(replace(settings, secret_keys=("someone-elses-key",)), "unsubscribe", [7, 42])
    with pytest.raises(BadToken):
        read_token(settings, "unsubscribe", token)


def test_confirm_token_expires(settings, token_clock):
    token = make_token(settings, "confirm", "ann@example.org")
    token_clock.advance(1)  # itsdangerous timestamps are whole seconds
    with pytest.raises(BadToken) as caught:
        read_token(settings, "confirm", token, max_age=0)
    assert caught.value.expired


def test_confirm_token_older_than_default_max_age_fails(settings):
    # The same keys, salt and signer as ours, but a clock set back past the limit.
    ours = tokens._serializer(settings.signing_keys, "confirm")
    signed_at = int(time.time()) - tokens.CONFIRM_MAX_AGE_SECONDS - 60

    class SignerInThePast(ours.signer):
        def get_timestamp(self) -> int:
            return signed_at

    past = URLSafeTimedSerializer(
        ours.secret_keys, salt=ours.salt, signer=SignerInThePast, signer_kwargs=ours.signer_kwargs
    )
    token = past.dumps("ann@example.org")
    assert read_token(settings, "confirm", token, max_age=2 * tokens.CONFIRM_MAX_AGE_SECONDS) == "ann@example.org"
    with pytest.raises(BadToken) as caught:
        read_token(settings, "confirm", token)
    assert caught.value.expired


def test_unsubscribe_and_preferences_tokens_do_not_take_max_age(settings):
    token = make_token(settings, "unsubscribe", [7, 42])
    with pytest.raises(ValueError):
        read_token(settings, "unsubscribe", token, max_age=10)


def test_unknown_purpose_is_a_programming_error(settings):
    with pytest.raises(ValueError):
        make_token(settings, "login", 1)


def test_link_urls_carry_tokens_that_read_back(settings):
    link = unsubscribe_url(settings, 7, 42)
    assert link.startswith(f"{BASE_URL}/u/")
    assert read_token(settings, "unsubscribe", link.removeprefix(f"{BASE_URL}/u/")) == [7, 42]

    link = preferences_url(settings, 42)
    assert link.startswith(f"{BASE_URL}/p/")
    assert read_token(settings, "preferences", link.removeprefix(f"{BASE_URL}/p/")) == 42


@pytest.mark.parametrize("purpose, payload", [("unsubscribe", [7, 42]), ("unsubscribe", [123456, 9876543]),
                                              ("preferences", 42), ("preferences", 1_000_000_007)])
def test_link_tokens_are_the_ones_itsdangerous_makes(settings, purpose, payload):
    # Links in mail already sent must keep working, and the web pages read
    # tokens with itsdangerous: the fast signer makes exactly its tokens.
    rotated = replace(settings, secret_keys=("key-2025", "key-2024"))
    for keys in (settings, rotated):
        reference = tokens._serializer(keys.signing_keys, purpose).dumps(payload)
        assert make_token(keys, purpose, payload) == reference


def test_a_link_token_whose_payload_itsdangerous_would_compress_still_reads_back(settings):
    payload = [1] * 200  # itsdangerous compresses this; the fast signer does not, and both forms read back
    token = make_token(settings, "unsubscribe", payload)
    assert not token.startswith(".")
    assert tokens._serializer(settings.signing_keys, "unsubscribe").dumps(payload).startswith(".")
    assert read_token(settings, "unsubscribe", token) == payload
