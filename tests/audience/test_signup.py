"""Double opt-in: one email per address per window, a link that confirms, limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from newsletter.audience import signup
from newsletter.errors import InputError
from newsletter.sending.scheduling import schedule_send
from newsletter.sending.lifecycle import freeze_audience
from newsletter.store.models import Delivery, IssueRow, Membership, PublicationRow, Subscriber, utcnow
from newsletter.audience.subscribers import get_list, unsubscribe
from newsletter.audience.tokens import BadToken
from tests.audience.signups import PUB, ask, confirm_link, token_of


def membership_status(session, email="ann@example.com"):
    session.expire_all()
    return session.scalar(select(Membership.status).join(Subscriber).where(Subscriber.email == email))


def test_a_sign_up_sends_one_confirmation_email_and_waits_for_the_link(signup_world, settings, mail):
    assert ask(signup_world, settings, mail) == signup.EMAIL_SENT

    [message] = mail.parsed()
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    assert message["To"].addresses[0].display_name == "Ann"
    assert message["From"].addresses[0].addr_spec == "news@example.org"
    assert "confirm your subscription to Together We're Better" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message  # a transactional message, not an issue
    assert confirm_link(message).startswith(f"{settings.base_url}/confirm/")
    assert membership_status(signup_world) == "unconfirmed"


def test_unconfirmed_people_get_no_issue_until_they_confirm(signup_world, settings, mail):
    ask(signup_world, settings, mail)
    ask(signup_world, settings, mail, email="bob@example.com", name="")
    signup.confirm_subscription(signup_world, settings, token_of(mail.parsed()[0]))

    send_id = _send_to_news(signup_world)
    freeze_audience(signup_world, send_id)
    frozen = signup_world.scalars(select(Delivery.email).where(Delivery.send_id == send_id)).all()
    assert frozen == ["ann@example.com"]


def test_confirming_moves_the_membership_to_confirmed_and_a_second_click_says_so(signup_world, settings, mail):
    ask(signup_world, settings, mail)
    token = token_of(mail.parsed()[0])

    first = signup.confirm_subscription(signup_world, settings, token)
    second = signup.confirm_subscription(signup_world, settings, token)

    assert (first.outcome, second.outcome) == (signup.CONFIRMED, signup.ALREADY_CONFIRMED)
    assert first.mailing_list.slug == "news" and first.publication.slug == PUB
    assert membership_status(signup_world) == "confirmed"


def test_at_most_one_email_per_address_within_the_window(signup_world, settings, mail):
    results = [ask(signup_world, settings, mail, email=e) for e in ("ann@example.com", " ann@example.com ", "ann@EXAMPLE.COM")]

    assert results == [signup.EMAIL_SENT, signup.RECENTLY_SENT, signup.RECENTLY_SENT]
    assert mail.recipients() == ["ann@example.com"]


def test_after_the_window_a_new_email_goes_out(signup_world, settings, mail):
    quick = replace(settings, signup_email_window_seconds=0)
    assert [ask(signup_world, quick, mail), ask(signup_world, quick, mail)] == [signup.EMAIL_SENT, signup.EMAIL_SENT]
    assert len(mail.accepted) == 2


def test_an_address_already_subscribed_gets_the_same_answer_and_stays_subscribed(signup_world, settings, mail):
    quick = replace(settings, signup_email_window_seconds=0)
    ask(signup_world, quick, mail)
    signup.confirm_subscription(signup_world, quick, token_of(mail.parsed()[0]))

    # Someone else types the same address with another name: same answer, nothing changes.
    assert ask(signup_world, quick, mail, name="Mallory") == signup.EMAIL_SENT
    assert membership_status(signup_world) == "confirmed"
    assert signup_world.scalar(select(Subscriber.name).where(Subscriber.email == "ann@example.com")) == "Ann"
    assert signup.confirm_subscription(signup_world, quick, token_of(mail.parsed()[1])).outcome == signup.ALREADY_CONFIRMED


@pytest.mark.parametrize("email", ["not an address", "ann@", "ann@example..com", ""])
def test_a_bad_address_is_refused_with_the_reason_and_nothing_is_written(signup_world, settings, mail, email):
    with pytest.raises(InputError) as caught:
        ask(signup_world, settings, mail, email=email)

    [problem] = caught.value.problems
    assert problem.where == "field email" and "not an email address" in problem.message
    assert signup_world.scalar(select(func.count()).select_from(Subscriber)) == 0
    assert mail.accepted == []


@pytest.mark.parametrize("name", [
    "Ann\r\nBcc: everyone@example.net", "Ann\nX", "Ann\rX", "Ann%0d%0aBcc: x@example.net",
    "=?utf-8?q?Ann=0D=0ABcc:_x@example.net?=", "Ann\u2028X", "x" * 201,
])
def test_a_name_that_could_add_a_header_is_refused_and_nothing_is_written(signup_world, settings, mail, name):
    with pytest.raises(InputError) as caught:
        ask(signup_world, settings, mail, name=name)

    assert [p.where for p in caught.value.problems] == ["field name"]
    assert signup_world.scalar(select(func.count()).select_from(Subscriber)) == 0
    assert mail.accepted == []


def test_a_suppressed_address_gets_no_email(signup_world, settings, mail):
    from newsletter.audience.suppressions import add_suppression

    add_suppression(signup_world, "ann@example.com", "complaint", "test")
    signup_world.commit()

    assert ask(signup_world, settings, mail) == signup.SUPPRESSED
    assert mail.accepted == []


def test_an_old_link_does_not_undo_leaving_but_a_new_sign_up_does(signup_world, settings, mail):
    quick = replace(settings, signup_email_window_seconds=0)
    ask(signup_world, quick, mail)
    old_token = token_of(mail.parsed()[0])
    signup.confirm_subscription(signup_world, quick, old_token)
    unsubscribe(signup_world, "ann@example.com")  # leaves everything
    signup_world.commit()

    assert signup.confirm_subscription(signup_world, quick, old_token).outcome == signup.LEFT_SINCE
    assert membership_status(signup_world) == "unsubscribed"

    ask(signup_world, quick, mail)
    assert signup.confirm_subscription(signup_world, quick, token_of(mail.parsed()[1])).outcome == signup.CONFIRMED
    assert membership_status(signup_world) == "confirmed"
    assert signup_world.scalar(select(Subscriber.status).where(Subscriber.email == "ann@example.com")) == "active"


@pytest.mark.parametrize("tamper", [lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), lambda t: "x" + t])
def test_a_tampered_link_is_refused(signup_world, settings, mail, tamper):
    ask(signup_world, settings, mail)
    with pytest.raises(BadToken) as caught:
        signup.confirm_subscription(signup_world, settings, tamper(token_of(mail.parsed()[0])))
    assert not caught.value.expired
    assert membership_status(signup_world) == "unconfirmed"


def test_an_expired_link_is_refused_and_a_new_one_can_be_sent(signup_world, settings, mail, token_clock):
    short = replace(settings, confirm_max_age_seconds=1, signup_email_window_seconds=0)
    ask(signup_world, short, mail)
    token = token_of(mail.parsed()[0])
    token_clock.advance(2)  # past the second a link may be old

    with pytest.raises(BadToken) as caught:
        signup.confirm_subscription(signup_world, short, token)
    assert caught.value.expired
    assert membership_status(signup_world) == "unconfirmed"

    assert signup.renew_confirmation(signup_world, short, token, transport=mail) == signup.EMAIL_SENT
    fresh = token_of(mail.parsed()[1])
    assert signup.confirm_subscription(signup_world, short, fresh).outcome == signup.CONFIRMED


def test_when_the_email_cannot_be_sent_the_person_can_ask_again_at_once(signup_world, settings, mail):
    mail.permanent["ann@example.com"] = (550, "5.7.1", "relaying denied")
    with pytest.raises(signup.ConfirmationNotSent):
        ask(signup_world, settings, mail)

    del mail.permanent["ann@example.com"]
    assert ask(signup_world, settings, mail) == signup.EMAIL_SENT
    assert mail.recipients() == ["ann@example.com"]


def test_an_unknown_list_is_not_found(signup_world, settings, mail):
    from newsletter.errors import NotFound

    with pytest.raises(NotFound):
        ask(signup_world, settings, mail, list_slug="weekly")
    assert mail.accepted == []


def test_the_local_client_limit_counts_posts_per_address(settings):
    limit = signup.ClientLimit(replace(settings, redis_url="", signup_requests_per_client=3))
    assert [limit.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("192.0.2.2")


def test_the_redis_client_limit_is_shared_by_every_web_process(settings, redis_url):
    shared = replace(settings, redis_url=redis_url, signup_requests_per_client=3)
    first, second = signup.ClientLimit(shared), signup.ClientLimit(shared)
    allowed = [first.allow("192.0.2.1"), second.allow("192.0.2.1"), first.allow("192.0.2.1"), second.allow("192.0.2.1")]
    assert allowed == [True, True, True, False]
    assert second.allow("198.51.100.7")


def _send_to_news(session) -> int:
    from datetime import date

    publication = session.scalars(select(PublicationRow)).one()
    issue = IssueRow(publication_id=publication.id, slug="2021-09", title="September", subject="September news",
                     issue_date=date(2021, 9, 1), html="<p>hi</p>", text="hi", content_hash="x")
    session.add(issue)
    session.flush()
    send = schedule_send(session, issue, get_list(session, PUB, "news"), at=utcnow() + timedelta(minutes=5))
    session.flush()
    return send.id


def test_the_confirm_link_uses_the_publications_own_web_address(signup_world, settings, mail):
    signup_world.get(PublicationRow, 1).sending = {"base_url": "https://links.partnership.example"}
    signup_world.commit()
    assert ask(signup_world, settings, mail) == signup.EMAIL_SENT
    [message] = mail.parsed()
    assert confirm_link(message).startswith("https://links.partnership.example/confirm/")
    # The link works wherever the web app answers: the token is the install's.
    assert signup.confirm_subscription(signup_world, settings, token_of(message))


# -- addresses beyond ASCII ------------------------------------------------------


def test_a_sign_up_beyond_ascii_gets_its_confirmation_over_smtputf8(signup_world, settings):
    from tests.smtp_server import SmtpTestServer
    from newsletter.transports.smtp import SmtpTransport

    with SmtpTestServer(smtputf8=True) as server, \
            SmtpTransport(server.host, server.port, security="none", connections=1, timeout=5) as transport:
        assert signup.request_subscription(signup_world, settings, PUB, "news", "jörg@Bücher.example", "Jörg",
                                           transport=transport) == signup.EMAIL_SENT
    [received] = server.messages
    assert received.recipients == ["jörg@xn--bcher-kva.example"]
    assert "<jörg@xn--bcher-kva.example>" in received.data.split(b"\r\n\r\n")[0].decode("utf-8")


def test_a_sign_up_the_publications_transport_can_never_deliver_is_refused_with_the_reason(signup_world, settings, mail):
    by_sendgrid = replace(settings, transport="sendgrid")
    with pytest.raises(InputError) as caught:
        ask(signup_world, by_sendgrid, mail, email="jörg@example.org")

    [problem] = caught.value.problems
    assert problem.where == "field email"
    assert "letters beyond ASCII before the @" in problem.message and "SendGrid" in problem.message
    assert signup_world.scalar(select(func.count()).select_from(Subscriber)) == 0
    assert mail.accepted == []
    assert ask(signup_world, by_sendgrid, mail, email="jo@bücher.example") == signup.EMAIL_SENT  # a domain is fine
