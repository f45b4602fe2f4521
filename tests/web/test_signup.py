"""The sign-up and confirm pages, as a person (or a bot) uses them."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, select

from newsletter.config import settings_from
from newsletter.store.db import session_scope
from newsletter.store.models import Membership, Subscriber
from newsletter.audience.subscribers import create_list
from newsletter.audience.tokens import UNSUBSCRIBE, make_token
from newsletter.web import create_app

PUB = "together-were-better"
FORM = f"/subscribe/{PUB}/news"


@pytest.fixture
def site_settings(tmp_path, sqlite_url, publication_row, migrate):
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("web-test-key",), base_url="http://newsletter.example.org")
    migrate(settings.effective_database_url)
    with session_scope(settings) as session:
        publication_row(session, slug=PUB, web_base_url=f"{settings.base_url}/{PUB}/", language="en-GB",
                        settings={"colours": {"primary": "#005eb8"}})
        create_list(session, PUB, "news", "Monthly news", "The partnership's news, once a month")
    return settings


def client_for(settings):
    return create_app(settings).test_client()


@pytest.fixture
def client(site_settings):
    return client_for(site_settings)


def text_of(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def csrf(client, path=FORM) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def sign_up(client, email="ann@example.com", name="Ann", **extra):
    return client.post(FORM, data={"csrf_token": csrf(client), "email": email, "name": name, **extra})


def outbox(settings) -> list:
    folder = settings.outbox_dir
    files = sorted(folder.glob("*.eml")) if folder.is_dir() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


def confirm_path(message) -> str:
    link = re.search(r"https?://\S+/confirm/\S+", message.get_body(("plain",)).get_content()).group(0)
    return "/" + link.split("/", 3)[3]


def counts(settings) -> tuple[int, int]:
    with session_scope(settings) as session:
        return (session.scalar(select(func.count()).select_from(Subscriber)),
                session.scalar(select(func.count()).select_from(Membership)))


def status(settings, email="ann@example.com") -> str | None:
    with session_scope(settings) as session:
        return session.scalar(select(Membership.status).join(Subscriber).where(Subscriber.email == email))


def test_the_form_is_labelled_and_in_the_publications_language(client):
    response = client.get(FORM)
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert '<html lang="en-GB">' in html
    assert "<h1>Subscribe to Monthly news</h1>" in html
    assert '<label for="email">Email address</label>' in html and 'id="email"' in html
    assert '<label for="name">' in html and 'autocomplete="email"' in html
    # The honeypot is out of sight, out of the tab order and hidden from screen readers.
    assert re.search(r'<div class="trap" aria-hidden="true">.*?tabindex="-1"', html, re.DOTALL)
    assert "<script" not in html


def test_signing_up_and_confirming_from_the_email(client, site_settings):
    response = sign_up(client)

    assert response.status_code == 200
    assert "Check your inbox" in text_of(response)
    [message] = outbox(site_settings)
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    assert status(site_settings) == "unconfirmed"

    # A mail scanner opening the link changes nothing; the button does.
    page = client_for(site_settings).get(confirm_path(message))
    assert page.status_code == 200 and "Yes, subscribe me" in text_of(page)
    assert status(site_settings) == "unconfirmed"

    done = client_for(site_settings).post(confirm_path(message))
    assert done.status_code == 200 and "You are subscribed" in text_of(done)
    assert status(site_settings) == "confirmed"
    again = client_for(site_settings).post(confirm_path(message))
    assert "You are already subscribed" in text_of(again)


def test_asking_twice_gets_the_same_answer_and_one_email(client, site_settings):
    first, second = sign_up(client), sign_up(client)

    assert text_of(first) == text_of(second)
    assert len(outbox(site_settings)) == 1


def test_an_already_subscribed_address_gets_the_same_page_as_a_new_one(client, site_settings):
    sign_up(client)
    client.post(confirm_path(outbox(site_settings)[0]))

    known = sign_up(client_for(site_settings), name="Someone else")
    new = sign_up(client_for(site_settings), email="new@example.com", name="Someone else")
    assert known.status_code == new.status_code == 200
    assert text_of(known) == text_of(new)


@pytest.mark.parametrize("email, reason", [
    ("ann.example.com", "must have an @-sign"),
    ("ann@", "There must be something after the @-sign"),
])
def test_an_invalid_address_shows_the_reason_on_the_form(client, site_settings, email, reason):
    response = sign_up(client, email=email)
    html = response.get_data(as_text=True)

    assert response.status_code == 400
    assert "There is a problem" in html and reason in html
    assert 'aria-invalid="true" aria-describedby="email-error" autofocus' in html
    assert f'value="{email}"' in html  # what they typed is kept
    assert counts(site_settings) == (0, 0) and outbox(site_settings) == []


@pytest.mark.parametrize("name", ["Ann\r\nBcc: all@example.net", "Ann%0ABcc: all@example.net",
                                  "=?utf-8?b?QW5uDQpCY2M6IGFsbEBleGFtcGxlLm5ldA==?="])
def test_a_name_with_a_header_injection_is_refused_and_nothing_changes(client, site_settings, name):
    response = sign_up(client, name=name)

    assert response.status_code == 400
    assert "line break" in text_of(response)
    assert counts(site_settings) == (0, 0) and outbox(site_settings) == []


def test_a_bot_filling_the_honeypot_is_told_nothing_and_nothing_happens(client, site_settings):
    response = sign_up(client, website="https://spam.example.net")

    assert response.status_code == 200 and "Check your inbox" in text_of(response)
    assert counts(site_settings) == (0, 0) and outbox(site_settings) == []


def test_a_post_without_the_forms_token_is_refused(client, site_settings):
    response = client.post(FORM, data={"email": "ann@example.com", "name": "Ann"})

    assert response.status_code == 400 and "This form has expired" in text_of(response)
    assert counts(site_settings) == (0, 0)


def test_too_many_posts_from_one_client_address_are_refused(site_settings):
    client = client_for(replace(site_settings, signup_requests_per_client=2))
    answers = [sign_up(client, email=f"p{n}@example.com").status_code for n in range(3)]
    elsewhere = client.post(FORM, data={"csrf_token": csrf(client), "email": "q@example.com"},
                            environ_base={"REMOTE_ADDR": "198.51.100.7"})

    assert answers == [200, 200, 429]
    assert elsewhere.status_code == 200
    assert {m["To"].addresses[0].addr_spec for m in outbox(site_settings)} == {"p0@example.com", "p1@example.com", "q@example.com"}


def test_an_oversized_post_gets_a_page_and_changes_nothing(client, site_settings):
    response = client.post(FORM, data={"csrf_token": csrf(client), "email": "ann@example.com", "name": "x" * (2 << 20)})

    assert response.status_code == 413 and "too much" in text_of(response)
    assert counts(site_settings) == (0, 0)


def test_a_malformed_post_gets_a_page_and_changes_nothing(client, site_settings):
    response = client.post(FORM, data=b"--b\r\nContent-Disposition: form-data; name=email\r\n\r\nann@example.com",
                           content_type="multipart/form-data; boundary=b")

    assert response.status_code == 400
    assert "<h1>" in response.get_data(as_text=True) and "Traceback" not in text_of(response)
    assert counts(site_settings) == (0, 0)


def test_an_unknown_list_is_a_404_page(client):
    response = client.get(f"/subscribe/{PUB}/weekly")
    assert response.status_code == 404 and "Page not found" in text_of(response)


@pytest.mark.parametrize("path", ["/confirm/not-a-token", "/confirm/WzEsMSwxXQ.aaaa.bbbb"])
def test_a_tampered_confirm_link_is_a_404_page(client, path):
    for response in (client.get(path), client.post(path)):
        assert response.status_code == 404 and "This link is not valid" in text_of(response)


def test_an_unsubscribe_token_does_not_confirm_anything(client, site_settings):
    sign_up(client)
    wrong_purpose = make_token(site_settings, UNSUBSCRIBE, [1, 1, int(time.time() * 1000)])

    assert client.post(f"/confirm/{wrong_purpose}").status_code == 404
    assert status(site_settings) == "unconfirmed"


def test_an_expired_link_offers_a_new_email(site_settings, token_clock):
    short = replace(site_settings, confirm_max_age_seconds=1, signup_email_window_seconds=0)
    client = client_for(short)
    sign_up(client)
    path = confirm_path(outbox(short)[0])
    token_clock.advance(2)  # past the second a link may be old

    expired = client.post(path)
    assert expired.status_code == 410
    assert "This link has expired" in text_of(expired) and "Email me a new link for Monthly news" in text_of(expired)
    assert status(short) == "unconfirmed"

    renewed = client.post(f"{path}/renew")
    assert renewed.status_code == 200 and "Check your inbox" in text_of(renewed)
    [fresh] = {confirm_path(m) for m in outbox(short)} - {path}
    assert client.post(fresh).status_code == 200
    assert status(short) == "confirmed"
