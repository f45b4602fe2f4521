"""The ops dashboard as an operator uses it: behind a login, the numbers of
`newsletter ops status`, and buttons that pause, resume, cancel and retry a send."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.accounts import admins
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, SendEvent, utcnow
from newsletter.web import create_app
from tests.memory_transport import MemoryTransport
from tests.passwords import quick_hashes
from tests.ops_world import (
    OPERATOR, PASSWORD, Broker, address, csrf_of, deliver_batches, log_in, send_state, start_send,
)


@pytest.fixture
def app(settings):
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, OPERATOR, PASSWORD)
    return create_app(settings)


@pytest.fixture
def operator(app):
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def press(client, send_id: int, action: str):
    """The button, then the confirmation page's button."""
    page = client.get(f"/ops/sends/{send_id}/{action}")
    assert page.status_code == 200 and "<form method=\"post\"" in page.get_data(as_text=True)
    return client.post(f"/ops/sends/{send_id}/{action}", data={"csrf_token": csrf_of(client, f"/ops/sends/{send_id}/{action}")})


# --- the login ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ops/", "/ops/sends/1/pause", "/ops/sends/1/cancel", "/ops/sends/1/retry-failed"])
def test_anonymous_pages_redirect_to_the_login(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login?next=")


def test_the_old_login_address_leads_to_the_one_login_and_back_here(app):
    client = app.test_client()
    response = client.get("/ops/login")
    assert response.status_code == 301
    assert response.headers["Location"] == "/console/login?next=/ops/"
    assert client.post("/ops/login", data={"email": OPERATOR, "password": PASSWORD}).status_code == 405


def test_anonymous_json_gets_401_and_anonymous_posts_change_nothing(app, settings, rendered):
    send_id = start_send(settings, rendered, 5)
    client = app.test_client()
    response = client.get("/ops/status.json")
    assert response.status_code == 401 and response.get_json()["login"] == "/console/login"
    token = csrf_of(client, "/console/login")  # a real token, but no login
    for action in ("pause", "cancel"):
        assert client.post(f"/ops/sends/{send_id}/{action}", data={"csrf_token": token}).status_code == 302
    assert send_state(settings, send_id) == "sending"


def test_a_wrong_password_and_an_unknown_account_get_the_same_page(app):
    wrong = log_in(app.test_client(), password="not the password at all")
    unknown = log_in(app.test_client(), email="nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    text = wrong.get_data(as_text=True)
    assert "The email address or the password is not right." in text
    assert _without_tokens(text).replace(OPERATOR, "") == \
        _without_tokens(unknown.get_data(as_text=True)).replace("nobody@example.org", "")
    assert "Set-Cookie" not in wrong.headers or "operator" not in wrong.headers.get("Set-Cookie", "")


def _without_tokens(html: str) -> str:
    return re.sub(r'(value="|sha256-)[^"\']*', "", html)


def test_log_in_see_the_dashboard_and_log_out(app):
    client = app.test_client()
    response = log_in(client)
    assert response.status_code == 303 and response.headers["Location"] == "/ops/"
    page = client.get("/ops/")
    assert page.status_code == 200 and OPERATOR in page.get_data(as_text=True)
    cookie = page.request.headers.get("Cookie", "")
    assert cookie  # the signed session
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Secure" in set_cookie  # base_url is https
    client.post("/console/logout", data={"csrf_token": csrf_of(client, "/ops/")})
    assert client.get("/ops/").status_code == 302


def test_a_login_without_a_csrf_token_does_not_log_in(app):
    client = app.test_client()
    response = client.post("/console/login", data={"email": OPERATOR, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/ops/").status_code == 302


@pytest.mark.parametrize("shared", ["local", "redis"])
def test_logins_are_limited_per_client_and_per_account(settings, shared, request):
    if shared == "redis":
        settings = replace(settings, redis_url=request.getfixturevalue("redis_url"))
    settings = replace(settings, ops_login_attempts=3)
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, OPERATOR, PASSWORD)
    app = create_app(settings)
    for _ in range(3):
        assert log_in(app.test_client(), password="wrong guess number n", REMOTE_ADDR="192.0.2.1").status_code == 401
    # The same client, even with the right password now, and another account from it.
    assert log_in(app.test_client(), REMOTE_ADDR="192.0.2.1").status_code == 429
    # The same account from many clients.
    assert log_in(app.test_client(), REMOTE_ADDR="192.0.2.2").status_code == 429
    # Someone else, from elsewhere, is not held up.
    with session_scope(settings) as session, quick_hashes():
        admins.create_admin(session, "other@example.org", PASSWORD)
    assert log_in(app.test_client(), email="other@example.org", REMOTE_ADDR="192.0.2.3").status_code == 303


def test_a_password_reset_ends_an_open_session(app, settings, operator):
    assert operator.get("/ops/").status_code == 200
    with session_scope(settings) as session:
        admins.reset_password(session, OPERATOR, "a brand new long passphrase")
    assert operator.get("/ops/").status_code == 302


# --- what it shows --------------------------------------------------------------------------


def test_the_numbers_on_the_dashboard_are_those_of_ops_status(app, settings, rendered, operator, cli):
    transport = MemoryTransport()
    transport.permanent[address(2)] = (550, "5.1.1", "<reader002@example.com>: user unknown")
    transport.temporary[address(13)] = 5
    send_id = start_send(settings, rendered, 35)
    deliver_batches(settings, transport, send_id, 2)  # 20 of 35 tried

    expected = json.loads(cli("ops", "status", "--json").output)
    shown = operator.get("/ops/status.json").get_json()
    html = operator.get("/ops/").get_data(as_text=True)

    [cli_send] = expected["sends"]
    assert (cli_send["sent"], cli_send["failed"], cli_send["pending"]) == (18, 1, 16)  # one waits for a retry
    counted = ("state", "audience", "sent", "failed", "pending", "possible_duplicates", "skipped", "cancelled",
               "bounces", "complaints", "errors")
    assert {k: shown["sends"][0][k] for k in counted} == {k: cli_send[k] for k in counted}
    assert shown["queues"] == expected["queues"] and shown["problems"] == expected["problems"]
    row = re.search(rf'<tr data-send="{send_id}">(.*?)</tr>', html, re.DOTALL).group(1)
    cells = dict(re.findall(r'data-field="(\w+)">([^<]*)<', row))
    for field in ("sent", "failed", "pending", "possible_duplicates", "skipped", "cancelled", "audience"):
        assert int(cells[field]) == cli_send[field], field
    assert cells["state"].strip() == "sending"
    for error in cli_send["errors"]:
        assert f"<td>{error['reason'].replace('<', '&lt;').replace('>', '&gt;')}</td><td class=\"n\">{error['count']}</td>" in html


def test_the_dashboard_charts_what_was_sent_and_polls_with_its_own_script(app, settings, rendered, operator):
    send_id = start_send(settings, rendered, 12)
    deliver_batches(settings, MemoryTransport(), send_id)
    response = operator.get("/ops/")
    html = response.get_data(as_text=True)
    assert "<figcaption>Messages sent: 12 in all</figcaption>" in html
    assert "<figcaption>Queue depth: 0 waiting now</figcaption>" in html
    assert html.count("<svg") == 3 and "<rect" in html
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
    assert '<noscript><meta http-equiv="refresh"' in html
    script = re.search(r'<script src="([^"]+)"', html).group(1)
    served = operator.get(script)
    assert served.status_code == 200 and "status.json" not in script and b"fetch(" in served.data


# --- the buttons ----------------------------------------------------------------------------


def history(settings, send_id) -> list[tuple[str, str]]:
    with session_scope(settings) as session:
        return [tuple(row) for row in session.execute(select(SendEvent.kind, SendEvent.detail)
                                                       .where(SendEvent.send_id == send_id).order_by(SendEvent.id))]


def test_pause_stops_the_workers_and_resume_starts_them_again(app, settings, rendered, operator, caplog):
    send_id = start_send(settings, rendered, 30)
    transport = MemoryTransport()
    deliver_batches(settings, transport, send_id, 1)

    caplog.set_level(logging.INFO, logger="newsletter.web.ops")
    response = press(operator, send_id, "pause")
    assert response.status_code == 303
    assert send_state(settings, send_id) == "paused"
    assert f"Send {send_id} is paused." in operator.get("/ops/").get_data(as_text=True)
    assert any(OPERATOR in r.getMessage() and "pause" in r.getMessage() for r in caplog.records)
    assert history(settings, send_id)[-1] == ("paused", f"by {OPERATOR} from the dashboard")  # who, in the send's history

    reports = deliver_batches(settings, transport, send_id)
    assert len(transport.accepted) == 10 and {r.stopped for r in reports[1:]} == {"paused"}

    press(operator, send_id, "resume")
    assert send_state(settings, send_id) == "sending"
    assert history(settings, send_id)[-1] == ("resumed", f"by {OPERATOR} from the dashboard")
    deliver_batches(settings, transport, send_id)
    assert sorted(transport.recipients()) == [address(n) for n in range(30)]


def test_cancel_and_retry_failed(app, settings, rendered, operator):
    transport = MemoryTransport()
    transport.permanent[address(1)] = (554, "5.7.1", "refused by policy")
    send_id = start_send(settings, rendered, 20)
    deliver_batches(settings, transport, send_id, 1)

    transport.permanent.clear()
    press(operator, send_id, "retry-failed")
    with session_scope(settings) as session:
        assert session.scalar(select(Delivery.state).where(Delivery.email == address(1))) == "retry"

    press(operator, send_id, "cancel")
    assert send_state(settings, send_id) == "cancelled"
    assert history(settings, send_id)[-2:] == [
        ("retry failed", f"1 failed recipient to be sent again, by {OPERATOR} from the dashboard"),
        ("cancelled", f"by {OPERATOR} from the dashboard")]
    with session_scope(settings) as session:
        states = session.scalars(select(Delivery.state).where(Delivery.send_id == send_id)).all()
    assert states.count("cancelled") == 11 and states.count("sent") == 9
    # A cancelled send cannot be paused; the page says why and nothing changes.
    refused = operator.post(f"/ops/sends/{send_id}/pause", data={"csrf_token": csrf_of(operator, "/ops/")})
    assert refused.status_code == 409 and "it is cancelled" in refused.get_data(as_text=True)


def test_a_post_without_a_csrf_token_changes_nothing(app, settings, rendered, operator):
    send_id = start_send(settings, rendered, 5)
    for action in ("pause", "cancel"):
        response = operator.post(f"/ops/sends/{send_id}/{action}", data={})
        assert response.status_code == 400 and "Nothing was changed" in response.get_data(as_text=True)
    assert send_state(settings, send_id) == "sending"


def test_the_queue_chart_shows_the_beats_samples(app, settings, operator):
    from newsletter.ops.queue_history import record_queue_depths

    with session_scope(settings) as db:
        record_queue_depths(db, settings, utcnow() - timedelta(minutes=30), broker=Broker(send=57))
        record_queue_depths(db, settings, utcnow(), broker=Broker(send=3))
    html = operator.get("/ops/").get_data(as_text=True)
    assert 'aria-label="Queue depth, most messages waiting at once: 0 waiting now, at most 57"' in html


# --- how each publication sends ------------------------------------------------------------


def test_the_publications_page_shows_whether_each_secret_is_set_never_its_value(operator, settings, monkeypatch):
    from newsletter.authoring.sending_block import SecretRef, SendingBlock
    from newsletter.store.models import PublicationRow

    block = SendingBlock(transport="sendgrid", account="twb-sendgrid",
                         secrets=(("sendgrid_api_key", SecretRef("sending.sendgrid.api_key", env="TWB_SG_KEY")),))
    with session_scope(settings) as session:
        session.add(PublicationRow(slug="twb", name="TWB", from_name="TWB", from_email="news@example.org",
                                   reply_to="news@example.org", postal_address="1 Way", web_base_url="https://x.example.org/",
                                   settings={}, sending=block.to_json()))
    monkeypatch.setenv("TWB_SG_KEY", "SG.very-secret")
    page = operator.get("/ops/publications").get_data(as_text=True)
    assert "$TWB_SG_KEY: set" in page and "SG.very-secret" not in page and "twb-sendgrid" in page
    monkeypatch.delenv("TWB_SG_KEY")
    assert "$TWB_SG_KEY: not set" in operator.get("/ops/publications").get_data(as_text=True)
    assert 'href="/ops/publications"' in operator.get("/ops/").get_data(as_text=True)
