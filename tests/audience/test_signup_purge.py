"""Sign-ups never confirmed are forgotten after UNCONFIRMED_RETENTION_DAYS."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from newsletter.audience import signup
from newsletter.audience.suppressions import add_suppression
from newsletter.store.models import (
    ConfirmationEmail,
    MailingList,
    Membership,
    Subscriber,
    Suppression,
    utcnow,
)
from newsletter.audience.subscribers import create_list, unsubscribe
from tests.audience.signups import PUB, ask, token_of

OLD, RECENT = 40, 3  # days ago; the retention is 30


@pytest.fixture
def quick(settings):
    """Settings that let one address be emailed twice in a test."""
    return replace(settings, signup_email_window_seconds=0, unconfirmed_retention_days=30)


def backdate(session, email: str, days: int, list_slug: str | None = None) -> None:
    """Make a sign-up (its memberships and confirmation email) ``days`` old."""
    when = utcnow() - timedelta(days=days)
    subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    memberships = update(Membership).where(Membership.subscriber_id == subscriber_id)
    if list_slug:
        memberships = memberships.where(Membership.list_id == select(MailingList.id).where(MailingList.slug == list_slug).scalar_subquery())
    session.execute(memberships.values(created_at=when, updated_at=when))
    session.execute(update(ConfirmationEmail).where(ConfirmationEmail.subscriber_id == subscriber_id).values(last_sent_at=when))
    session.commit()


def memberships(session) -> dict[tuple[str, str], str]:
    session.expire_all()
    rows = session.execute(select(Subscriber.email, MailingList.slug, Membership.status)
                           .join(Membership, Membership.subscriber_id == Subscriber.id)
                           .join(MailingList, MailingList.id == Membership.list_id))
    return {(email, slug): status for email, slug, status in rows}


def subscribers(session) -> set[str]:
    return set(session.scalars(select(Subscriber.email)))


def test_old_unconfirmed_sign_ups_go_and_everyone_else_stays(signup_world, quick, mail):
    create_list(signup_world, PUB, "events", "Events")
    signup_world.commit()
    for email in ("old@example.com", "recent@example.com", "confirmed@example.com", "left@example.com", "both@example.com"):
        ask(signup_world, quick, mail, email=email)
    ask(signup_world, quick, mail, email="both@example.com", list_slug="events")
    for message in mail.parsed()[2:5]:  # confirmed@, left@ and both@'s news sign-up
        signup.confirm_subscription(signup_world, quick, token_of(message))
    unsubscribe(signup_world, "left@example.com")
    signup_world.commit()
    for email in ("old@example.com", "confirmed@example.com", "left@example.com", "both@example.com"):
        backdate(signup_world, email, OLD)
    backdate(signup_world, "recent@example.com", RECENT)

    report = signup.purge_unconfirmed(signup_world, quick)

    assert (report.memberships_deleted, report.subscribers_deleted) == (2, 1)
    assert memberships(signup_world) == {
        ("recent@example.com", "news"): "unconfirmed",
        ("confirmed@example.com", "news"): "confirmed",
        ("left@example.com", "news"): "unsubscribed",
        ("both@example.com", "news"): "confirmed",  # their old unconfirmed "events" sign-up went
    }
    assert subscribers(signup_world) == {"recent@example.com", "confirmed@example.com", "left@example.com", "both@example.com"}
    # The record of emails sent to the forgotten address went with it.
    assert set(signup_world.scalars(select(ConfirmationEmail.subscriber_id))) == set(signup_world.scalars(select(Subscriber.id)))


def test_a_second_purge_changes_nothing(signup_world, quick, mail):
    ask(signup_world, quick, mail)
    backdate(signup_world, "ann@example.com", OLD)
    signup.purge_unconfirmed(signup_world, quick)

    again = signup.purge_unconfirmed(signup_world, quick)

    assert (again.memberships_deleted, again.subscribers_deleted) == (0, 0)
    assert subscribers(signup_world) == set()


def test_a_suppressed_address_is_forgotten_but_stays_suppressed(signup_world, quick, mail):
    ask(signup_world, quick, mail)
    add_suppression(signup_world, "ann@example.com", "complaint", "test")
    signup_world.commit()
    backdate(signup_world, "ann@example.com", OLD)

    signup.purge_unconfirmed(signup_world, quick)

    assert subscribers(signup_world) == set()
    assert signup_world.scalars(select(Suppression.reason).where(Suppression.email == "ann@example.com")).all() == ["complaint"]
    # Asking again still sends nothing.
    assert ask(signup_world, quick, mail) == signup.SUPPRESSED


def test_someone_who_asked_again_recently_keeps_a_working_link(signup_world, quick, mail):
    ask(signup_world, quick, mail)
    backdate(signup_world, "ann@example.com", OLD)
    ask(signup_world, quick, mail)  # a fresh confirmation email today; the membership is still the old one

    report = signup.purge_unconfirmed(signup_world, quick)

    assert report.memberships_deleted == 0
    assert signup.confirm_subscription(signup_world, quick, token_of(mail.parsed()[1])).outcome == signup.CONFIRMED


def test_a_retention_shorter_than_a_confirm_link_lives_waits_for_the_link(signup_world, quick, mail):
    hasty = replace(quick, unconfirmed_retention_days=1, confirm_max_age_seconds=7 * 24 * 3600)
    ask(signup_world, hasty, mail)
    backdate(signup_world, "ann@example.com", 3)

    assert signup.purge_unconfirmed(signup_world, hasty).memberships_deleted == 0
    assert signup.confirm_subscription(signup_world, hasty, token_of(mail.parsed()[0])).outcome == signup.CONFIRMED


def test_the_command_and_the_beat_task_purge(signup_world, quick, mail, cli, monkeypatch):
    ask(signup_world, quick, mail, email="one@example.com")
    ask(signup_world, quick, mail, email="two@example.com")
    backdate(signup_world, "one@example.com", OLD)
    monkeypatch.setenv("UNCONFIRMED_RETENTION_DAYS", "30")

    result = cli("subscribers", "purge-unconfirmed")

    assert result.exit_code == 0, result.output
    assert "1 unconfirmed memberships older than 30 days deleted, 1 subscribers" in result.output
    assert subscribers(signup_world) == {"two@example.com"}

    from workers.celery import app
    from workers.tasks import purge_unconfirmed_signups

    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert purge_unconfirmed_signups.name in scheduled
    backdate(signup_world, "two@example.com", OLD)
    purge_unconfirmed_signups()  # what the worker runs when the beat sends it
    assert subscribers(signup_world) == set()
