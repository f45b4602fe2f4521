"""A publication's `sending:` block: read from publication.yaml, every problem at
its file, line and field, secrets named and never held, stored with the publication."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.authoring.content import load_publication
from newsletter.authoring.sending_block import SendingBlock, lane_settings, link_problem
from newsletter.transports import account_of
from newsletter.config import ConfigError
from newsletter.errors import InputError
from newsletter.store.publications import settings_for, sync_publication

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "together-were-better"


def publication_with(tmp_path: Path, sending: str) -> Path:
    folder = tmp_path / "twb"
    shutil.copytree(SAMPLE, folder, dirs_exist_ok=True)
    path = folder / "publication.yaml"
    path.write_text(path.read_text() + "\n" + sending)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InputError) as raised:
        load_publication(path)
    return [str(p) for p in raised.value.problems]


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1)
                if text in line and not line.lstrip().startswith("#"))


FULL = """sending:
  base_url: https://links.example.org/
  transport: smtp
  account: partnership-relay
  smtp:
    host: smtp.example.org
    port: 587
    username: twb
    password_env: TWB_SMTP_PASSWORD
    security: starttls
  connections: 8
  rate: {per_second: 14, per_hour: 50000, per_day: 200000}
  bounce_domain: Bounces.Example.org
  list_id_domain: lists.example.org
  feedback_id_sender: twb-news
  dkim:
    - {selector: s2026a, domain: example.org, key_file: /run/secrets/dkim-rsa.pem}
    - {selector: s2026e, domain: example.org, key_env: TWB_DKIM_ED25519, active_from: 2026-12-01T00:00:00Z}
"""


def test_a_full_block_is_read_and_laid_over_the_environment(tmp_path, settings):
    publication = load_publication(publication_with(tmp_path, FULL))
    block = publication.sending
    assert (block.base_url, block.transport, block.account) == ("https://links.example.org", "smtp", "partnership-relay")
    assert (block.per_second, block.per_hour, block.per_day) == (14.0, 50000, 200000)
    assert block.bounce_domain == "bounces.example.org"
    assert [k.selector for k in block.dkim] == ["s2026a", "s2026e"]
    assert block.dkim[1].active_from.isoformat() == "2026-12-01T00:00:00+00:00"
    # Without secrets: links and addresses are the publication's; nothing secret is read.
    own = lane_settings(settings, block, publication.slug, secrets=False)
    assert (own.base_url, own.transport, own.smtp_host, own.smtp_port) == (
        "https://links.example.org", "smtp", "smtp.example.org", 587)
    assert (own.smtp_connections, own.rate_limit_per_second, own.bounce_domain) == (8, 14.0, "bounces.example.org")
    assert own.smtp_password == ""
    # With them, the variable it names is read, at send time.
    own = lane_settings(settings, block, publication.slug, environ={"TWB_SMTP_PASSWORD": "s3cret"})
    assert own.smtp_password == "s3cret"
    assert account_of(own, block) == "partnership-relay"


def test_the_block_is_stored_with_the_publication_without_secrets(tmp_path, settings, session, monkeypatch):
    publication = load_publication(publication_with(tmp_path, FULL))
    row = sync_publication(session, publication)
    session.commit()
    session.expire_all()
    assert SendingBlock.from_json(row.sending) == publication.sending
    assert "TWB_SMTP_PASSWORD" in str(row.sending) and "s3cret" not in str(row.sending)
    monkeypatch.setenv("TWB_SMTP_PASSWORD", "s3cret")
    assert settings_for(settings, row, secrets=True).smtp_password == "s3cret"
    assert settings_for(settings, row).base_url == "https://links.example.org"


def test_a_secret_written_inline_is_refused_at_its_line(tmp_path):
    path = publication_with(tmp_path, "sending:\n  transport: smtp\n  smtp:\n    host: smtp.example.org\n"
                                      "    password: hunter2\n")
    [problem] = problems_of(path)
    assert f"publication.yaml:{line_of(path, 'password: hunter2')}: error:" in problem
    assert "publication 'together-were-better'" in problem and "`sending.smtp.password`" in problem
    assert "password_env" in problem and "password_file" in problem
    assert "hunter2" not in problem


@pytest.mark.parametrize("sending, field, words", [
    ("sending:\n  transport: pigeon\n", "transport: pigeon", ["`sending.transport` 'pigeon'", "smtp, ses"]),
    ("sending:\n  base_url: news.example.org\n", "  base_url:", ["`sending.base_url`", "full web address"]),
    ("sending:\n  smtp: {host: a.example.org, prot: 25}\n", "smtp:", ["unknown field `prot`"]),
    ("sending:\n  rate: {per_second: fast}\n", "rate:", ["`sending.rate.per_second`"]),
    ("sending:\n  colour: blue\n", "colour:", ["unknown field `colour`"]),
    ("sending:\n  dkim:\n    - {selector: s1, domain: example.org}\n", "selector: s1", ["names no private key"]),
    ("sending:\n  transport: ses\n  smtp: {host: a.example.org}\n", "smtp:", ["`sending.transport` is 'ses'"]),
])
def test_bad_settings_name_publication_file_line_and_field(tmp_path, sending, field, words):
    path = publication_with(tmp_path, sending)
    [problem] = problems_of(path)
    assert f"publication.yaml:{line_of(path, field)}: error:" in problem
    assert "publication 'together-were-better'" in problem
    for word in words:
        assert word in problem


def test_a_secret_variable_unset_names_the_publication_and_the_field(tmp_path, settings):
    block = load_publication(publication_with(tmp_path, FULL)).sending
    with pytest.raises(ConfigError) as raised:
        lane_settings(settings, block, "together-were-better", environ={})
    message = str(raised.value)
    assert "publication 'together-were-better', sending.smtp.password_env" in message
    assert "TWB_SMTP_PASSWORD is not set" in message


def test_a_key_file_that_cannot_be_read_names_the_publication_and_the_field(tmp_path):
    key = load_publication(publication_with(tmp_path, FULL)).sending.dkim[0]
    with pytest.raises(ConfigError) as raised:
        key.secret(1).read("together-were-better")
    message = str(raised.value)
    assert "publication 'together-were-better', sending.dkim[1], key_file" in message
    assert "/run/secrets/dkim-rsa.pem cannot be read" in message


@pytest.mark.parametrize("url, words", [
    ("https://news.example.org", ""),
    ("http://news.example.org", "does not use https"),
    ("https://localhost:8000", "loopback"),
    ("https://127.0.0.1", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://10.1.2.3", "private"),
    ("https://192.168.0.10", "private"),
    ("https://intranet", "local network"),
])
def test_links_must_be_https_and_public(url, words):
    problem = link_problem(url)
    assert (words in problem and problem) if words else problem == ""
