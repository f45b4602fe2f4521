"""Security headers on every response, CSRF tokens for our own forms, proxies.

The pages carry no script at all, so the Content-Security-Policy allows none.
Styles are inline ``<style>`` blocks (the web copy's colours come from each
publication); rather than allow inline styles in general, every response's
own blocks are allowed by their SHA-256 hash, computed as it goes out.

A view that needs another policy sets its own Content-Security-Policy header,
which is then left alone.

CSRF tokens come from Flask-WTF (signed with the app's secret key, bound to
the session cookie). The one-click unsubscribe POST takes none on purpose:
RFC 8058 says a mailbox provider posts it with no cookie.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix
from wtforms import ValidationError

from newsletter.config import Settings

_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
_POLICY = (
    "default-src 'none'; img-src 'self'; style-src {styles}; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000"
CSRF_FIELD = "csrf_token"


def install(app: Flask, settings: Settings) -> None:
    """Wire headers, cookie settings and trusted proxies into ``app`` (once)."""
    if app.extensions.get("newsletter.security"):
        return
    app.extensions["newsletter.security"] = True
    app.config.update(
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        WTF_CSRF_FIELD_NAME=CSRF_FIELD,
    )
    if settings.web_proxy_count > 0:
        # Only then are X-Forwarded-For / -Proto believed: the client address
        # feeds the sign-up limit, and the scheme decides HSTS.
        n = settings.web_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)
    app.after_request(add_security_headers)
    app.jinja_env.globals["csrf_token"] = generate_csrf


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    if "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = content_security_policy(response)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Links carry tokens in their paths: never tell another site where a click came from.
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", HSTS)
    if "Cache-Control" not in headers:
        # Pages behind a token are personal; views of public pages say otherwise.
        headers["Cache-Control"] = "no-store"
    return response


def content_security_policy(response: Response) -> str:
    styles = "'none'"
    if response.mimetype == "text/html" and not response.direct_passthrough:
        hashes = {_sha256(block) for block in _STYLE_BLOCK.findall(response.get_data(as_text=True))}
        if hashes:
            styles = " ".join(sorted(hashes))
    return _POLICY.format(styles=styles)


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def csrf_problem() -> str:
    """"" when the posted form carries a valid CSRF token, else why not."""
    try:
        validate_csrf(request.form.get(CSRF_FIELD, ""))
    except ValidationError as exc:
        return str(exc)
    return ""
