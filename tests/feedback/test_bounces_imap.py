"""The bounce mailbox read over IMAP, from a real Dovecot started for each test.

The reports are built as in tests/feedback/test_bounces.py (the Maildir reader's
tests): DSNs (RFC 3464) and feedback reports (RFC 5965) about a real send.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from newsletter.feedback import bounces
from newsletter.errors import InputError, NewsletterError
from newsletter.store.models import ProviderEvent
from tests import imap_server
from tests.conftest import _missing
from tests.feedback.bounce_reports import BOUNCE_DOMAIN, arf, dsn, suppressions

pytestmark = pytest.mark.slow  # a Dovecot started for each test

AUTO_REPLY = (b"From: someone@example.net\r\nTo: bounces@" + BOUNCE_DOMAIN.encode()
              + b"\r\nSubject: Out of office\r\n\r\nAway until Monday.\r\n")


@pytest.fixture
def dovecot(tmp_path):
    if not imap_server.installed():
        _missing("Dovecot", "dovecot-imapd is not installed; scripts/install-test-services installs it")
    with imap_server.DovecotServer(tmp_path) as server:
        yield server


def events_recorded(session) -> int:
    return session.scalar(select(func.count()).select_from(ProviderEvent))


def test_reports_in_the_imap_inbox_suppress_their_addresses_and_are_read_once(session, verp, sent, dovecot):
    bounced_sender, bounced_original = sent["reader001@example.com"]
    complained_sender, complained_original = sent["reader002@example.com"]
    dovecot.deliver(dsn(bounced_sender, "reader001@example.com", bounced_original))
    dovecot.deliver(arf(complained_original, "reader002@example.com", complained_sender))
    dovecot.deliver(AUTO_REPLY)

    report = bounces.read_imap(session, verp, dovecot.url("imaps"), ssl_context=dovecot.client_ssl_context())

    assert (report.messages, report.reports, report.events.recorded) == (3, 2, 2)
    assert suppressions(session) == {"reader001@example.com": "hard_bounce", "reader002@example.com": "complaint"}
    # Every message read is flagged seen, the auto-reply too: a person opening
    # the mailbox sees what is new since the last run.
    assert all("\\Seen" in flags for flags in dovecot.flags()) and len(dovecot.flags()) == 3

    again = bounces.read_imap(session, verp, dovecot.url("imaps"), ssl_context=dovecot.client_ssl_context())

    assert (again.messages, again.reports) == (0, 0)
    assert events_recorded(session) == 2
    assert len(suppressions(session)) == 2


def test_only_new_messages_are_read_on_the_next_run(session, verp, sent, dovecot):
    sender, original = sent["reader000@example.com"]
    dovecot.deliver(dsn(sender, "reader000@example.com", original, action="delayed", status="4.4.7"))
    first = bounces.read_imap(session, verp, dovecot.url("imaps"), ssl_context=dovecot.client_ssl_context())
    dovecot.deliver(dsn(sender, "reader000@example.com", original, action="failed", status="5.1.1"))

    second = bounces.read_imap(session, verp, dovecot.url("imaps"), ssl_context=dovecot.client_ssl_context())

    assert (first.messages, first.reports) == (1, 0)  # a delay notice is not a bounce
    assert (second.messages, second.reports) == (1, 1)
    assert suppressions(session) == {"reader000@example.com": "hard_bounce"}


def test_the_command_reads_over_starttls_trusting_the_ca_the_operator_names(cli, monkeypatch, session, sent, dovecot, tmp_path):
    sender, original = sent["reader001@example.com"]
    dovecot.deliver(dsn(sender, "reader001@example.com", original))
    # An operator whose mail server has a private CA points OpenSSL at it.
    dovecot.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SECRET_KEYS", "test-secret-key")  # the key the send was signed with
    monkeypatch.setenv("BOUNCE_DOMAIN", BOUNCE_DOMAIN)
    session.commit()  # SQLite: the command writes while this session waits

    result = cli("bounces", "read", "--imap", dovecot.url("imap"))

    assert result.exit_code == 0, result.output
    assert "1 messages read, 1 reports tied to a delivery" in result.output
    assert "1 addresses suppressed" in result.output
    assert suppressions(session) == {"reader001@example.com": "hard_bounce"}
    assert "\\Seen" in dovecot.flags()[0]


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_a_server_whose_certificate_is_not_trusted_gets_no_password(session, verp, sent, dovecot, scheme):
    sender, original = sent["reader001@example.com"]
    dovecot.deliver(dsn(sender, "reader001@example.com", original))
    logins_before = dovecot.log_text().count("Login: user=<bounces>")

    # The system's CAs do not know the test CA, as they would not know an impostor's.
    with pytest.raises(NewsletterError, match="certificate we cannot trust"):
        bounces.read_imap(session, verp, dovecot.url(scheme))

    assert dovecot.log_text().count("Login: user=<bounces>") == logins_before
    assert suppressions(session) == {}
    assert "\\Seen" not in dovecot.flags()[0]


def test_a_wrong_password_or_folder_is_a_problem_to_fix(session, verp, dovecot):
    context = dovecot.client_ssl_context()
    with pytest.raises(InputError, match="refused user 'bounces'"):
        bounces.read_imap(session, verp, dovecot.url(password="wrong"), ssl_context=context)
    with pytest.raises(InputError, match="no folder 'Bounces'"):
        bounces.read_imap(session, verp, dovecot.url(folder="Bounces"), ssl_context=context)
