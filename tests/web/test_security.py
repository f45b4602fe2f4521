"""Security headers on every page, HSTS over https only, trusted proxies, cookies."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace

import pytest

from newsletter.config import settings_from
from newsletter.store.db import session_scope
from newsletter.audience.subscribers import add_subscriber, create_list
from newsletter.audience.tokens import preferences_url
from newsletter.web import create_app

PUB = "together-were-better"


@pytest.fixture
def site_settings(tmp_path, sqlite_url, publication_row, migrate):
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("security-test-key",), base_url="https://newsletter.example.org")
    migrate(settings.effective_database_url)
    with session_scope(settings) as session:
        publication_row(session, slug=PUB, reply_to="", postal_address="1 Partnership Way",
                        web_base_url=f"{settings.base_url}/{PUB}/")
        create_list(session, PUB, "news", "Monthly news")
        add_subscriber(session, "ann@example.com", "Ann", ["news"], publication_slug=PUB)
    return settings


def pages(settings) -> list[str]:
    return [f"/subscribe/{PUB}/news", f"/{PUB}/", f"/{PUB}/feed.xml", "/confirm/bad", "/u/bad", "/no/such/page/",
            preferences_url(settings, 1).removeprefix(settings.base_url)]


def test_every_page_carries_a_strict_policy_and_the_other_headers(site_settings):
    client = create_app(site_settings).test_client()
    for path in pages(site_settings):
        headers = client.get(path).headers
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-inline" not in policy and "script-src" not in policy, path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"


def test_the_policy_allows_exactly_the_pages_own_style_block(site_settings):
    response = create_app(site_settings).test_client().get(f"/subscribe/{PUB}/news")
    [style] = re.findall(r"<style>(.*?)</style>", response.get_data(as_text=True), re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()

    assert f"style-src 'sha256-{digest}';" in response.headers["Content-Security-Policy"]


def test_pages_behind_a_token_are_never_cached(site_settings):
    client = create_app(site_settings).test_client()
    path = preferences_url(site_settings, 1).removeprefix(site_settings.base_url)
    assert client.get(path).headers["Cache-Control"] == "no-store"


def test_hsts_is_sent_over_https_only(site_settings):
    client = create_app(site_settings).test_client()
    assert client.get(f"/subscribe/{PUB}/news", base_url="https://newsletter.example.org").headers[
        "Strict-Transport-Security"].startswith("max-age=")
    assert "Strict-Transport-Security" not in client.get(f"/subscribe/{PUB}/news").headers


def test_forwarded_headers_count_only_from_a_configured_proxy(site_settings):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    direct = create_app(site_settings).test_client()
    proxied = create_app(replace(site_settings, web_proxy_count=1)).test_client()

    assert "Strict-Transport-Security" not in direct.get(f"/subscribe/{PUB}/news", headers=forwarded).headers
    assert "Strict-Transport-Security" in proxied.get(f"/subscribe/{PUB}/news", headers=forwarded).headers


def test_the_sign_up_limit_counts_the_forwarded_client_behind_a_proxy(site_settings):
    client = create_app(replace(site_settings, web_proxy_count=1, signup_requests_per_client=1)).test_client()
    form = f"/subscribe/{PUB}/news"

    def post(client_address):
        return client.post(form, data={"email": "x@example.com"}, headers={"X-Forwarded-For": client_address}).status_code

    # The second post from one client is over the limit; another client behind the same proxy is not.
    assert [post("203.0.113.9"), post("203.0.113.9"), post("198.51.100.4")] == [400, 429, 400]


def test_the_session_cookie_is_secure_on_an_https_install(site_settings):
    response = create_app(site_settings).test_client().get(f"/subscribe/{PUB}/news")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
