"""How a publication sends, from the command line: shown without revealing a
secret, and links that are not https and public warned about, and refused
for a real send unless the operator says so."""

from __future__ import annotations

import re
import shutil

import pytest
from sqlalchemy import select

from newsletter.config import get_settings
from newsletter.store.db import session_scope
from newsletter.store.models import Send
from tests.conftest import SAMPLE_ISSUE

SENDING = """
sending:
  base_url: {base_url}
  transport: smtp
  account: partnership-relay
  smtp: {{host: smtp.example.org, port: 587, username: twb, password_env: TWB_SMTP_PASSWORD}}
  rate: {{per_second: 14, per_hour: 50000}}
  bounce_domain: bounces.example.org
"""


@pytest.fixture
def publication(cli, tmp_path):
    def make(base_url: str):
        folder = tmp_path / "twb"
        shutil.copytree(SAMPLE_ISSUE.parent.parent, folder, dirs_exist_ok=True)
        path = folder / "publication.yaml"
        path.write_text(path.read_text() + SENDING.format(base_url=base_url))
        result = cli("publications", "add", folder)
        assert result.exit_code == 0, result.output
        return folder / "issues" / "2021-09"
    return make


def test_show_says_whether_a_secret_is_set_and_never_its_value(cli, publication, monkeypatch):
    publication("https://links.example.org")
    monkeypatch.setenv("TWB_SMTP_PASSWORD", "s3cret-value")
    shown = cli("publications", "show", "together-were-better").output
    assert "$TWB_SMTP_PASSWORD: set" in shown and "s3cret-value" not in shown
    assert "partnership-relay" in shown and "smtp.example.org:587" in shown and "14/s, 50000/hour" in shown
    assert "https://links.example.org" in shown and "bounces.example.org" in shown
    monkeypatch.delenv("TWB_SMTP_PASSWORD")
    assert "$TWB_SMTP_PASSWORD: not set" in cli("publications", "show", "together-were-better").output


def test_check_warns_about_links_that_are_not_https_and_public(cli, publication, monkeypatch):
    issue = publication("http://127.0.0.1:8000")
    monkeypatch.setenv("TWB_SMTP_PASSWORD", "x")
    result = cli("check", issue)
    assert result.exit_code == 0, result.output
    assert re.search(r"publication\.yaml:\d+: warning: publication 'together-were-better', sending\.base_url: "
                     r"links in its messages would not work", result.output)
    assert "http://127.0.0.1:8000 does not use https" in result.output


def test_a_real_send_with_private_links_is_refused_unless_the_operator_allows_it(cli, publication, monkeypatch):
    issue = publication("https://192.168.1.20")
    monkeypatch.setenv("TWB_SMTP_PASSWORD", "x")
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    assert cli("subscribers", "add", "reader1@example.com", "--list", "staff").exit_code == 0
    refused = cli("schedule", issue, "--list", "staff", "--at", "2099-07-01 09:30")
    assert refused.exit_code != 0
    assert "publication 'together-were-better', sending.base_url" in refused.output
    assert "points at a private address" in refused.output and "--allow-private-links" in refused.output
    with session_scope(get_settings()) as session:
        assert session.scalars(select(Send)).all() == []

    allowed = cli("schedule", issue, "--list", "staff", "--at", "2099-07-01 09:30", "--allow-private-links")
    assert allowed.exit_code == 0, allowed.output
    with session_scope(get_settings()) as session:
        [send] = session.scalars(select(Send)).all()
        assert send.allow_private_links
    assert "were allowed (--allow-private-links)" in cli("sends", "show", str(send.id)).output


def test_a_proof_leaves_by_the_publications_own_transport_with_its_own_links(cli, tmp_path):
    from email import message_from_bytes, policy

    folder = tmp_path / "twb"
    shutil.copytree(SAMPLE_ISSUE.parent.parent, folder)
    path = folder / "publication.yaml"
    own = tmp_path / "twb-outbox"
    path.write_text(path.read_text() + f"\nsending:\n  base_url: https://links.example.org\n"
                                       f"  transport: outbox\n  outbox: {{dir: {own}}}\n")
    result = cli("proof", folder / "issues" / "2021-09", "--to", "editor@example.org")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "outbox").glob("*.eml")) == []  # not the environment's outbox
    [file] = own.glob("*.eml")
    message = message_from_bytes(file.read_bytes(), policy=policy.default)
    assert message["List-Unsubscribe"].startswith("<https://links.example.org/")
