"""DKIM: every message a worker hands to SMTP verifies with dkimpy's own verifier."""

from __future__ import annotations

import re
from dataclasses import replace

import dkim as dkimpy
from dkim.util import parse_tag_value
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.sending import dkim, scheduling
from newsletter.config import ConfigError
from tests import dkim_verifiers
from tests.dkim_verifiers import assert_verified_everywhere
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send

SELECTOR = "news2026"


@pytest.fixture(scope="module")
def key_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture
def signing(settings, key_pem, tmp_path):
    path = tmp_path / "dkim.pem"
    path.write_bytes(key_pem)
    return replace(settings, dkim_private_key_path=str(path), dkim_selector=SELECTOR,
                   retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=50)


def dns_for(signer: dkim.DkimSigner, domain: str):
    """dkimpy's DNS lookup, answered with our public key at selector._domainkey.domain only."""
    def lookup(name, timeout=5):
        return signer.dns_record().encode() if name == f"{SELECTOR}._domainkey.{domain}.".encode() else None
    return lookup


def signature_tags(message: bytes) -> dict[bytes, object]:
    """The first DKIM-Signature's tags, h= as a list of lower-case names."""
    header = message.split(b"\r\nFrom: ")[0].removeprefix(b"DKIM-Signature:")
    tags = parse_tag_value(re.sub(rb"\s+", b"", header))
    tags[b"h"] = tags[b"h"].lower().split(b":")
    return tags


def sent_messages(session, settings, count=3):
    _, lst, issue = make_world(session, count)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=50)
    session.commit()
    transport = MemoryTransport()
    run_send(session, settings, transport, send.id)
    return [e.message for e in transport.accepted]


def test_every_message_sent_is_signed_and_verifies(session, signing):
    messages = sent_messages(session, signing)
    signer = dkim.signer_for(signing)

    assert len(messages) == 3
    for message in messages:
        assert message.startswith(b"DKIM-Signature: ")
        assert dkimpy.verify(message, dnsfunc=dns_for(signer, "gazette.example.org"))
    if dkim_verifiers.missing() is None:  # and OpenDKIM and Mail::DKIM, where installed
        for message in messages:
            assert_verified_everywhere(message, {f"{SELECTOR}._domainkey.gazette.example.org": signer.dns_record()}, 1)


def test_an_ed25519_key_in_the_environment_defaults_signs_every_message(session, signing, tmp_path):
    path = tmp_path / "ed25519.pem"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ed_signing = replace(signing, dkim_private_key_path=str(path))
    messages = sent_messages(session, ed_signing, 2)
    signer = dkim.signer_for(ed_signing)

    assert signer.dns_record().startswith("v=DKIM1; k=ed25519; p=")
    for message in messages:
        assert b"a=ed25519-sha256;" in message.split(b"\r\nFrom: ")[0]
        assert dkimpy.verify(message, dnsfunc=dns_for(signer, "gazette.example.org"))


def test_the_list_unsubscribe_headers_and_subject_are_covered(session, signing):
    message = sent_messages(session, signing, 1)[0]
    signer = dkim.signer_for(signing)
    lookup = dns_for(signer, "gazette.example.org")
    assert dkimpy.verify(message, dnsfunc=lookup)
    signed = signature_tags(message)[b"h"]
    for name in (b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post"):
        assert signed.count(name) == 2  # once more than the message holds it

    for header, value in ((b"Subject: ", b"Subject: You won a prize\r\n"),
                          (b"List-Unsubscribe: ", b"List-Unsubscribe: <https://evil.example/u>\r\n")):
        # Changing a signed header, or adding a second copy, breaks the signature.
        start = message.index(b"\r\n" + header) + 2
        end = message.index(b"\r\n", start) + 2
        assert not dkimpy.verify(message[:start] + value + message[end:], dnsfunc=lookup)
        assert not dkimpy.verify(value + message, dnsfunc=lookup)


def test_the_fast_path_signs_exactly_as_dkimpy_alone(key_pem):
    signer = dkim.DkimSigner(key_pem, SELECTOR, "example.org")
    message = (b"From: News <news@example.org>\r\nTo: a@example.com\r\nSubject: Hello\r\n"
               b"List-Unsubscribe: <https://example.org/u/x>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
               b"\r\nBody\r\n")
    fast, reference = signer.sign(message), signer.sign_reference(message)

    # The t= tag may differ by a second, and the folding differs; the tags never do.
    same = lambda m: {k: v for k, v in signature_tags(m).items() if k not in (b"t", b"b", b"i", b"q")}
    assert same(fast) == same(reference)
    assert dkimpy.verify(fast, dnsfunc=dns_for(signer, "example.org"))
    assert dkimpy.verify(reference, dnsfunc=dns_for(signer, "example.org"))


def test_the_key_is_read_once_per_process(signing):
    assert dkim.signer_for(signing) is dkim.signer_for(signing)
    assert dkim.signer_for(replace(signing, dkim_private_key_path="")) is None


def test_an_unusable_key_is_a_configuration_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="DKIM_PRIVATE_KEY_PATH"):
        dkim.DkimSigner(bad.read_bytes(), SELECTOR)
    with pytest.raises(ConfigError, match="DKIM_PRIVATE_KEY_PATH"):
        dkim._load(str(tmp_path / "missing.pem"), SELECTOR, "")
