"""VERP return paths and the bounce mailbox: DSNs (RFC 3464) and feedback reports (RFC 5965)."""

from __future__ import annotations

import mailbox
from dataclasses import replace

import pytest
from sqlalchemy import select

from newsletter.feedback import bounces
from newsletter.sending import return_path
from newsletter.errors import InputError
from newsletter.store.models import Delivery, ProviderEvent
from tests.feedback.bounce_reports import BOUNCE_DOMAIN, arf, dsn, suppressions


@pytest.fixture
def maildir(tmp_path):
    return mailbox.Maildir(tmp_path / "bounces", create=True), tmp_path / "bounces"


def test_every_message_goes_out_with_a_verp_return_path_naming_its_row(session, verp, sent):
    rows = dict(session.execute(select(Delivery.email, Delivery.id)).all())
    for recipient, (sender, _) in sent.items():
        assert sender.endswith("@" + BOUNCE_DOMAIN)
        assert return_path.delivery_from_verp(verp, sender) == rows[recipient]


def test_a_forged_or_altered_verp_address_names_nothing(verp):
    address = return_path.verp_address(verp, 42)
    assert return_path.delivery_from_verp(verp, address) == 42
    assert return_path.delivery_from_verp(verp, address.replace("bounces+42-", "bounces+43-")) is None
    assert return_path.delivery_from_verp(verp, f"bounces+42-{'0' * 12}@{BOUNCE_DOMAIN}") is None
    # After a key rotation, bounces of mail sent with the old key still count.
    rotated = replace(verp, secret_keys=("new-key",) + verp.signing_keys)
    assert return_path.delivery_from_verp(rotated, address) == 42


def test_a_hard_bounce_in_the_maildir_suppresses_the_address_and_is_read_once(session, verp, sent, maildir):
    folder, path = maildir
    sender, original = sent["reader001@example.com"]
    folder.add(dsn(sender, "reader001@example.com", original))

    report = bounces.read_maildir(session, verp, path)
    again = bounces.read_maildir(session, verp, path)

    assert (report.messages, report.reports, report.events.recorded) == (1, 1, 1)
    assert suppressions(session) == {"reader001@example.com": "hard_bounce"}
    event = session.scalars(select(ProviderEvent)).one()
    assert (event.kind, event.bounce, event.email) == ("bounced", "hard", "reader001@example.com")
    assert event.delivery_id == return_path.delivery_from_verp(verp, sender)
    assert again.messages == 0
    assert all("S" in m.get_flags() for m in folder)


def test_a_delay_notice_is_not_a_bounce_and_a_4xx_failure_is_soft(session, verp, sent, maildir):
    folder, path = maildir
    sender, original = sent["reader002@example.com"]
    folder.add(dsn(sender, "reader002@example.com", original, action="delayed", status="4.4.7"))
    folder.add(dsn(sender, "reader002@example.com", original, action="failed", status="4.2.2"))

    report = bounces.read_maildir(session, verp, path)

    assert (report.messages, report.reports) == (2, 1)
    assert [(e.kind, e.bounce) for e in session.scalars(select(ProviderEvent))] == [("bounced", "soft")]
    assert suppressions(session) == {}


def test_a_policy_refusal_in_a_bounce_notice_is_blocked_and_never_suppresses_the_person(session, verp, sent, maildir):
    # 5.7.x refuses the sender or the content (authentication, reputation), not the mailbox.
    folder, path = maildir
    sender, original = sent["reader000@example.com"]
    folder.add(dsn(sender, "reader000@example.com", original, status="5.7.1"))

    # Even where one soft bounce would suppress, a block is not one.
    report = bounces.read_maildir(session, replace(verp, soft_bounce_threshold=1), path)

    assert report.events.recorded == 1
    event = session.scalars(select(ProviderEvent)).one()
    assert (event.kind, event.bounce, event.email) == ("bounced", "blocked", "reader000@example.com")
    assert event.detail.startswith("5.7.1")
    assert suppressions(session) == {}


def test_a_feedback_report_is_a_complaint(session, verp, sent, maildir):
    folder, path = maildir
    sender, original = sent["reader000@example.com"]
    folder.add(arf(original, "reader000@example.com", sender))

    bounces.read_maildir(session, verp, path)

    assert suppressions(session) == {"reader000@example.com": "complaint"}


def test_reports_that_no_verp_tag_ties_to_a_row_change_nothing(session, verp, sent, maildir):
    folder, path = maildir
    _, original = sent["reader001@example.com"]
    # Anyone can mail the bounce address: a report naming someone else must not suppress them.
    folder.add(dsn(f"bounces@{BOUNCE_DOMAIN}", "reader001@example.com", original))
    folder.add(dsn(f"bounces+1-{'a' * 12}@{BOUNCE_DOMAIN}", "reader001@example.com", original))
    folder.add(b"From: someone@example.net\r\nTo: bounces@" + BOUNCE_DOMAIN.encode() + b"\r\nSubject: Out of office\r\n\r\nAway.\r\n")

    report = bounces.read_maildir(session, verp, path)

    assert (report.messages, report.reports) == (3, 0)
    assert suppressions(session) == {}


def test_a_folder_that_is_not_a_maildir_is_a_problem_to_fix(session, verp, tmp_path):
    with pytest.raises(InputError, match="not a Maildir"):
        bounces.read_maildir(session, verp, tmp_path)
