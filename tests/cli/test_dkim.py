"""`newsletter dkim keygen` and `verify`, as an operator sets up DNS with them."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from datetime import datetime, timezone

import dkim as dkimpy
import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.sending.dkim import KeySpec, signer_for_keys

DOMAIN = "gazette.example.org"
MESSAGE = (b"From: The Gazette <news@gazette.example.org>\r\nTo: reader@example.com\r\n"
           b"Subject: December issue\r\n\r\nThe December issue is out.\r\n")


def newsletter(*args):
    """The command as a user runs it: its own process, stdout and stderr apart."""
    return subprocess.run([sys.executable, "-m", "newsletter", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def published_value(zone_line: str) -> str:
    """What a resolver hands a verifier: the record's strings joined."""
    return "".join(re.findall(r'"([^"]*)"', zone_line))


@pytest.mark.slow  # starts processes of its own
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_prints_a_record_that_verifies_what_the_key_signs(tmp_path, kind):
    key = tmp_path / "news2026.pem"
    made = newsletter("dkim", "keygen", "--selector", "news2026", "--domain", DOMAIN, "--type", kind, "--out", key)

    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith(f'news2026._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k={kind}; p=')
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE" not in made.stdout + made.stderr and str(key) in made.stderr
    if kind == "rsa":  # RSA-2048's record is longer than one TXT string may be
        strings = re.findall(r'"([^"]*)"', line)
        assert len(strings) == 2 and all(len(s) <= 255 for s in strings)

    def dns(name, timeout=5):
        return published_value(line).encode() if name == f"news2026._domainkey.{DOMAIN}.".encode() else None
    signer = signer_for_keys((KeySpec("news2026", DOMAIN, key_file=str(key)),), datetime.now(timezone.utc))
    assert dkimpy.verify(signer.sign(MESSAGE), dnsfunc=dns)

    # And verify agrees, from the line as printed or from the value alone.
    record_file = tmp_path / "published.txt"
    record_file.write_text(made.stdout)
    checked = newsletter("dkim", "verify", "--selector", "news2026", "--domain", DOMAIN, "--key", key,
                         "--record-file", record_file)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"matches: news2026._domainkey.{DOMAIN}")
    checked = newsletter("dkim", "verify", "--selector", "news2026", "--domain", DOMAIN, "--key", key,
                         "--record", published_value(line))
    assert checked.returncode == 0, checked.stderr


def test_keygen_never_overwrites_a_key(tmp_path, run):
    key = tmp_path / "news2026.pem"
    assert run("dkim", "keygen", "--selector", "news2026", "--domain", DOMAIN, "--out", key).exit_code == 0
    before = key.read_bytes()

    again = run("dkim", "keygen", "--selector", "news2026", "--domain", DOMAIN, "--out", key)
    assert again.exit_code == 2
    assert f"{key}: error: the file exists, and a key is never overwritten" in again.stderr
    assert key.read_bytes() == before


def test_keygen_refuses_a_selector_that_is_not_a_dns_label(tmp_path, run):
    result = run("dkim", "keygen", "--selector", "news_2026", "--domain", DOMAIN, "--out", tmp_path / "k.pem")
    assert result.exit_code == 2
    assert "error: --selector: 'news_2026' is not a DNS label" in result.stderr
    assert not (tmp_path / "k.pem").exists()


@pytest.fixture
def two_keys(tmp_path, run):
    """Two keys and the records keygen printed for them."""
    made = {}
    for name, kind in (("rsa", "rsa"), ("other", "rsa"), ("ed", "ed25519")):
        key = tmp_path / f"{name}.pem"
        result = run("dkim", "keygen", "--selector", "news2026", "--domain", DOMAIN, "--type", kind, "--out", key)
        assert result.exit_code == 0, result.output
        made[name] = (key, published_value(result.stdout))
    return made


def verify(run, key, record, selector="news2026"):
    return run("dkim", "verify", "--selector", selector, "--domain", DOMAIN, "--key", key, "--record", record)


def test_verify_says_what_differs(two_keys, run):
    rsa_key, rsa_record = two_keys["rsa"]
    ed_key, ed_record = two_keys["ed"]
    _, other_record = two_keys["other"]
    own = {rsa_key: rsa_record, ed_key: ed_record}

    cases = [
        (rsa_key, other_record, "p= is another key"),
        (ed_key, rsa_record, "wrong k=: the record says k=rsa but the key is ed25519"),
        (rsa_key, "v=DKIM1; k=rsa; p=", "the record is revoked (p= is empty)"),
        (rsa_key, "v=DKIM1; k=rsa", "malformed record: it has no p="),
        (rsa_key, "v=DKIM1; k=rsa; p=@@not base64@@", "malformed record: p= is not a rsa public key"),
        (rsa_key, "this is not a DKIM record", "malformed record"),
        (rsa_key, rsa_record.replace("v=DKIM1", "v=DKIM2"), "v=DKIM2: a DKIM key record says v=DKIM1"),
        (rsa_key, rsa_record + "; h=sha1", "h=sha1 does not allow sha256"),
    ]
    for key, record, expected in cases:
        result = verify(run, key, record)
        assert result.exit_code == 1, (record, result.output)
        assert f"news2026._domainkey.{DOMAIN}: does not match: {expected}" in result.stderr, result.stderr
        # ... and shows the record that would match.
        assert published_value(result.stderr.splitlines()[-1]) == own[key]
        assert result.stdout == ""

    assert verify(run, ed_key, ed_record).exit_code == 0
    assert verify(run, rsa_key, rsa_record).exit_code == 0


def test_verify_notices_a_record_published_under_another_name(two_keys, run, tmp_path):
    key, record = two_keys["ed"]
    zone = tmp_path / "zone.txt"
    zone.write_text(f'news2025._domainkey.{DOMAIN}. 3600 IN TXT "{record}"\n')
    result = run("dkim", "verify", "--selector", "news2026", "--domain", DOMAIN, "--key", key, "--record-file", zone)
    assert result.exit_code == 1
    assert f"the record is published at news2025._domainkey.{DOMAIN}" in result.stderr


def test_verify_with_an_unusable_key_or_no_record_is_a_usage_error(two_keys, run, tmp_path):
    _, record = two_keys["rsa"]
    missing = verify(run, tmp_path / "missing.pem", record)
    assert missing.exit_code == 2 and "error: --key: the secrets file" in missing.stderr

    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text(record)
    wrong = verify(run, not_a_key, record)
    assert wrong.exit_code == 2 and "not a PEM private key" in wrong.stderr

    key, _ = two_keys["rsa"]
    neither = run("dkim", "verify", "--selector", "news2026", "--domain", DOMAIN, "--key", key)
    assert neither.exit_code == 2 and "give either --record TEXT or --record-file FILE" in neither.stderr
