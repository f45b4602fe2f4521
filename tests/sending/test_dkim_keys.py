"""DKIM keys a publication names: RSA and Ed25519, both at once, rotation,
and the errors a bad key setting gets. Every signature is checked by
dkimpy's own verifier against the TXT record we would publish."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from newsletter.config import ConfigError
from newsletter.sending.dkim import KeySpec, signer_for_keys
from newsletter.sending.dkim_records import zone_line

DOMAIN = "gazette.example.org"
SWITCH = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
MESSAGE = (b"From: The Gazette <news@gazette.example.org>\r\nTo: reader@example.com\r\n"
           b"Subject: December issue\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n"
           b"Message-ID: <1.2.3@gazette.example.org>\r\n"
           b"List-Unsubscribe: <https://gazette.example.org/u/abc>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
           b"\r\nThe December issue is out.\r\n")


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys():
    return {"rsa-old": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "rsa-new": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ed-old": ed25519.Ed25519PrivateKey.generate(),
            "ed-new": ed25519.Ed25519PrivateKey.generate()}


@pytest.fixture
def key_files(keys, tmp_path):
    paths = {}
    for name, key in keys.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(pem(key))
    return paths


def spec(key_files, name, selector, active_from=None, index=0):
    return KeySpec(selector=selector, domain=DOMAIN, key_file=str(key_files[name]), active_from=active_from,
                   where=f"publication 'gazette', sending.dkim[{index}]")


class Dns:
    """What a receiver finds in DNS: the records `zone_line` says to publish."""

    def __init__(self):
        self.records: dict[bytes, bytes] = {}

    def publish(self, selector, key):
        line = zone_line(selector, DOMAIN, key)
        name = line.split()[0].encode()
        self.records[name] = "".join(re.findall(r'"([^"]*)"', line)).encode()

    def withdraw(self, selector):
        del self.records[f"{selector}._domainkey.{DOMAIN}.".encode()]

    def __call__(self, name, timeout=5):
        return self.records.get(name)


def signatures(message: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature header, in order."""
    parsed = dkimpy.DKIM(message)
    found = []
    for name, value in parsed.headers:
        if name.lower() == b"dkim-signature":
            tags = dkimpy.util.parse_tag_value(value)
            found.append({k.decode(): re.sub(rb"\s+", b"", v).decode() for k, v in tags.items()})
    return found


def verifies(message: bytes, dns: Dns) -> list[bool]:
    """dkimpy's verdict on each signature of the message."""
    def verdict(index):
        try:
            return dkimpy.DKIM(message).verify(idx=index, dnsfunc=dns)
        except dkimpy.DKIMException:  # a body hash mismatch, say, is raised rather than returned
            return False
    return [verdict(i) for i in range(len(signatures(message)))]


@pytest.mark.parametrize("name,algorithm", [("rsa-old", "rsa-sha256"), ("ed-old", "ed25519-sha256")])
def test_one_key_of_either_type_signs_and_verifies(keys, key_files, name, algorithm):
    dns = Dns()
    dns.publish("news1", keys[name])
    signed = signer_for_keys((spec(key_files, name, "news1"),), SWITCH).sign(MESSAGE)

    assert [s["a"] for s in signatures(signed)] == [algorithm]
    assert signatures(signed)[0]["d"] == DOMAIN and signatures(signed)[0]["s"] == "news1"
    assert dkimpy.verify(signed, dnsfunc=dns)
    assert signed.endswith(MESSAGE)


def test_an_rsa_and_an_ed25519_key_both_sign_and_both_verify(keys, key_files):
    dns = Dns()
    dns.publish("rsa1", keys["rsa-old"])
    dns.publish("ed1", keys["ed-old"])
    specs = (spec(key_files, "ed-old", "ed1", index=0), spec(key_files, "rsa-old", "rsa1", index=1))
    signed = signer_for_keys(specs, SWITCH).sign(MESSAGE)

    assert [(s["a"], s["s"]) for s in signatures(signed)] == [("rsa-sha256", "rsa1"), ("ed25519-sha256", "ed1")]
    assert verifies(signed, dns) == [True, True]


def test_altering_a_signed_header_or_the_body_fails_both_signatures(keys, key_files):
    dns = Dns()
    dns.publish("rsa1", keys["rsa-old"])
    dns.publish("ed1", keys["ed-old"])
    specs = (spec(key_files, "rsa-old", "rsa1"), spec(key_files, "ed-old", "ed1", index=1))
    signed = signer_for_keys(specs, SWITCH).sign(MESSAGE)

    for altered in (signed.replace(b"Subject: December issue", b"Subject: You won a prize"),
                    signed.replace(b"<https://gazette.example.org/u/abc>", b"<https://evil.example/u>"),
                    signed.replace(b"The December issue is out.", b"Click here to claim your prize."),
                    b"Subject: A second subject\r\n" + signed):
        assert altered != signed
        assert verifies(altered, dns) == [False, False]


def test_a_rotation_hands_over_at_active_from_and_old_mail_still_verifies_while_published(keys, key_files):
    dns = Dns()
    dns.publish("news2026", keys["rsa-old"])
    dns.publish("news2027", keys["rsa-new"])  # published ahead of the switch: the overlap
    specs = (spec(key_files, "rsa-old", "news2026"),
             spec(key_files, "rsa-new", "news2027", active_from=SWITCH, index=1))

    before = signer_for_keys(specs, SWITCH - timedelta(seconds=1)).sign(MESSAGE)
    at = signer_for_keys(specs, SWITCH).sign(MESSAGE)
    after = signer_for_keys(specs, SWITCH + timedelta(days=30)).sign(MESSAGE)

    assert [s["s"] for s in signatures(before)] == ["news2026"]
    assert [s["s"] for s in signatures(at)] == ["news2027"]
    assert [s["s"] for s in signatures(after)] == ["news2027"]
    # Mail signed before the switch, read after it: verifies while the old record stays.
    assert verifies(before, dns) == [True] and verifies(after, dns) == [True]
    # Once the old record is withdrawn, only mail signed by the old key stops verifying.
    dns.withdraw("news2026")
    assert verifies(before, dns) == [False] and verifies(after, dns) == [True]


def test_each_key_type_rotates_on_its_own(keys, key_files):
    later = SWITCH + timedelta(days=7)
    specs = (spec(key_files, "rsa-old", "rsa2026"),
             spec(key_files, "rsa-new", "rsa2027", active_from=SWITCH, index=1),
             spec(key_files, "ed-old", "ed2026", index=2),
             spec(key_files, "ed-new", "ed2027", active_from=later, index=3))
    dns = Dns()
    for name, selector in (("rsa-old", "rsa2026"), ("rsa-new", "rsa2027"), ("ed-old", "ed2026"), ("ed-new", "ed2027")):
        dns.publish(selector, keys[name])

    def selectors(now):
        signed = signer_for_keys(specs, now).sign(MESSAGE)
        assert all(verifies(signed, dns))
        return [s["s"] for s in signatures(signed)]

    assert selectors(SWITCH - timedelta(hours=1)) == ["rsa2026", "ed2026"]
    assert selectors(SWITCH) == ["rsa2027", "ed2026"]
    assert selectors(later) == ["rsa2027", "ed2027"]


def test_a_key_not_yet_active_signs_nothing(key_files):
    only_future = (spec(key_files, "ed-new", "ed2027", active_from=SWITCH),)
    assert signer_for_keys(only_future, SWITCH - timedelta(minutes=1)) is None
    assert signer_for_keys(only_future, SWITCH) is not None
    assert signer_for_keys((), SWITCH) is None


def test_a_key_in_an_environment_variable_signs_too(keys, monkeypatch):
    dns = Dns()
    dns.publish("env1", keys["ed-old"])
    # As a one-line entry of an env file: the PEM's line breaks written as \n.
    monkeypatch.setenv("GAZETTE_DKIM_KEY", pem(keys["ed-old"]).decode().replace("\n", "\\n"))
    specs = (KeySpec(selector="env1", domain=DOMAIN, key_env="GAZETTE_DKIM_KEY", where="publication 'gazette'"),)
    assert dkimpy.verify(signer_for_keys(specs, SWITCH).sign(MESSAGE), dnsfunc=dns)


def test_keys_are_read_once_per_process(key_files):
    specs = (spec(key_files, "rsa-old", "once1"),)
    first = signer_for_keys(specs, SWITCH)
    key_files["rsa-old"].unlink()  # read already: no second read
    second = signer_for_keys(specs, SWITCH)
    assert second.keys[0] is first.keys[0]
    assert "PRIVATE" not in repr(second) and "once1" in repr(second)


# --- bad settings: each error names the publication's setting and the field ----------


def error_for(*specs: KeySpec) -> str:
    with pytest.raises(ConfigError) as caught:
        signer_for_keys(specs, SWITCH)
    return str(caught.value)


def test_an_unreadable_key_file_is_named(tmp_path):
    message = error_for(KeySpec("news1", DOMAIN, key_file=str(tmp_path / "missing.pem"),
                                where="publication 'gazette', sending.dkim[0]"))
    assert message.startswith("publication 'gazette', sending.dkim[0], key_file: ")
    assert "missing.pem" in message and "cannot be read" in message


def test_an_unset_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("GAZETTE_DKIM_UNSET", raising=False)
    message = error_for(KeySpec("news1", DOMAIN, key_env="GAZETTE_DKIM_UNSET",
                                where="publication 'gazette', sending.dkim[1]"))
    assert message.startswith("publication 'gazette', sending.dkim[1], key_env: ")
    assert "GAZETTE_DKIM_UNSET is not set" in message


def test_a_file_that_is_not_a_private_key_is_named_and_not_shown(tmp_path, keys):
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("secret-looking-text-that-must-not-be-echoed")
    message = error_for(KeySpec("news1", DOMAIN, key_file=str(not_pem), where="publication 'gazette', sending.dkim[0]"))
    assert message.startswith("publication 'gazette', sending.dkim[0], key_file ")
    assert "not a PEM private key" in message and "secret-looking" not in message

    public = tmp_path / "public.pem"
    public.write_bytes(keys["rsa-old"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "this is a public key" in error_for(KeySpec("news1", DOMAIN, key_file=str(public), where="p"))


def test_an_unsupported_key_type_is_named(tmp_path):
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    message = error_for(KeySpec("news1", DOMAIN, key_file=str(p256), where="publication 'gazette', sending.dkim[0]"))
    assert "sending.dkim[0]" in message and "unsupported key type" in message and "Ed25519" in message


@pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl command makes the short key")
def test_a_short_rsa_key_is_refused(tmp_path):
    short = tmp_path / "short.pem"  # cryptography will not make one this short; openssl will
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:768", "-out", str(short)],
                   check=True, capture_output=True)
    assert "768 bits is too short" in error_for(KeySpec("news1", DOMAIN, key_file=str(short), where="p"))


@pytest.mark.parametrize("selector", ["news_2026", "-news", "news 2026", "", "a" * 64, "news..2026"])
def test_a_selector_that_is_not_a_dns_label_is_refused(key_files, selector):
    message = error_for(spec(key_files, "rsa-old", selector, index=2))
    assert message.startswith("publication 'gazette', sending.dkim[2], selector: ")
    assert "not a DNS label" in message


def test_two_keys_of_one_type_with_the_same_active_from_are_refused(key_files):
    message = error_for(spec(key_files, "rsa-old", "a1", SWITCH, index=0),
                        spec(key_files, "ed-old", "e1", SWITCH, index=1),  # another type: allowed
                        spec(key_files, "rsa-new", "a2", SWITCH, index=2))
    assert message.startswith("publication 'gazette', sending.dkim[2], active_from: ")
    assert "two rsa keys" in message and "sending.dkim[0]" in message
    assert "two rsa keys" in error_for(spec(key_files, "rsa-old", "a1"), spec(key_files, "rsa-new", "a2", index=1))


def test_an_active_from_without_a_time_zone_is_refused(key_files):
    message = error_for(spec(key_files, "rsa-old", "a1", datetime(2026, 12, 1, 9, 0), index=3))
    assert message.startswith("publication 'gazette', sending.dkim[3], active_from: ") and "time zone" in message
