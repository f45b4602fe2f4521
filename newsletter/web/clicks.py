"""/c/<token>: the counted links of an issue (docs/clicks.md); web copy page views.

Thin: the token is read (authoring/counted_links.py), the click is handed to the
counter (feedback/clicks.py), and the reader is redirected at once. Nothing
here waits for Redis or the database: a send's publication (for the
not-found page's colours, and to refuse a deleted issue) is looked up once a
minute at most, and when the database cannot answer, a token with a good
signature is trusted.

A tampered token, a link that is not one of ours, a send that no longer
exists: the not-found page, in the publication's colours when we know them,
and nothing counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select
from werkzeug.datastructures import EnvironHeaders
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.urls import iri_to_uri

from newsletter.authoring.sending_block import CLICKS_PER_PERSON
from newsletter.feedback.click_counter import ClickCounter
from newsletter.feedback.clicks import Click, client_digest, request_rule
from newsletter.authoring.counted_links import TRAP, BadClickToken, read_ref, read_token
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, PublicationRow, Send
from newsletter.web.pages import database, install, not_found, settings
from newsletter.web.security import HSTS

log = logging.getLogger(__name__)

blueprint = Blueprint("clicks", __name__)
blueprint.record_once(install)

CACHE_SECONDS = 60.0
MAX_QUERY_LENGTH = 256  # m= is under 80 characters; anything longer is not ours
COUNTED_PAGES = ("archive.issue_page", "archive.article_page")


@dataclass(frozen=True)
class SendInfo:
    exists: bool
    publication: object | None = None  # enough of the publication for pages.page()
    per_person: bool = False


def _install_counter(state) -> None:
    app = state.app
    if "newsletter.clicks" in app.extensions:
        return
    settings = app.config["SETTINGS"]
    count = app.extensions["newsletter.clicks"] = ClickCounter(settings)
    sends = app.extensions["newsletter.click_sends"] = _SendCache(settings)
    app.after_request(_count_page_view)
    # The redirect itself answers before Flask is entered (a Flask request costs several
    # times more); inside ProxyFix, when there is one, so the client address is the same.
    fast = FastRedirect(app.wsgi_app.app if isinstance(app.wsgi_app, ProxyFix) else app.wsgi_app,
                        settings.signing_keys, count, sends)
    if isinstance(app.wsgi_app, ProxyFix):
        app.wsgi_app.app = fast
    else:
        app.wsgi_app = fast


blueprint.record_once(_install_counter)


def counter() -> ClickCounter:
    return current_app.extensions["newsletter.clicks"]


def count_click(count: ClickCounter, found, info: "SendInfo", m: str, method: str, headers, address: str,
                keys: tuple[str, ...]) -> None:
    """Hand one click to the counter; never waits."""
    ref = read_ref(keys, m)
    count.record(Click(
        send_id=found.send_id, link=found.link, at=count.clock(),
        client=client_digest(count.secret, address or ""),
        nonce=ref.nonce if ref else "", made_at=ref.made_at if ref else None,
        subscriber_id=ref.subscriber_id if ref and info.per_person else None,
        machine_reason=request_rule(method, headers),
    ))


class FastRedirect:
    """WSGI: a good ``GET``/``HEAD /c/<token>`` of a known send is counted and redirected here;
    anything else (a bad token, the trap, an unknown send) goes on to the Flask view below."""

    def __init__(self, app, keys: tuple[str, ...], count: ClickCounter, sends: "_SendCache"):
        self.app, self.keys, self.count, self.sends = app, keys, count, sends

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/c/") and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            headers = self._redirect(environ, path[3:])
            if headers is not None:
                start_response("302 Found", headers)
                return [b""]
        return self.app(environ, start_response)

    def _redirect(self, environ, token: str) -> list[tuple[str, str]] | None:
        query = environ.get("QUERY_STRING", "")
        if len(query) > MAX_QUERY_LENGTH:
            return None
        try:
            found = read_token(self.keys, token)
        except BadClickToken:
            return None
        if found.link == TRAP:
            return None
        info = self.sends.get(found.send_id)
        if not info.exists:
            return None
        m = next((v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "m"), "")
        count_click(self.count, found, info, m, environ["REQUEST_METHOD"], EnvironHeaders(environ),
                    environ.get("REMOTE_ADDR", ""), self.keys)
        location = found.url if found.url.isascii() else iri_to_uri(found.url)
        headers = [("Location", location), ("Content-Length", "0"), *REDIRECT_HEADERS]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", HSTS))
        return headers


# What security.add_security_headers gives every response, for a redirect answered outside Flask.
REDIRECT_HEADERS = (
    ("Cache-Control", "no-store"),  # every click is a request of its own
    ("Content-Security-Policy", "default-src 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)


@blueprint.route("/c/<path:token>", methods=["GET", "HEAD", "POST"])
def follow(token: str):
    """What FastRedirect does not answer: the not-found page, or (a POST) the same redirect."""
    if len(request.query_string) > MAX_QUERY_LENGTH:
        return not_found()
    keys = settings().signing_keys
    sends = current_app.extensions["newsletter.click_sends"]
    try:
        found = read_token(keys, token)
    except BadClickToken:
        return not_found(sends.publication_named_in(token))
    info = sends.get(found.send_id)
    if not info.exists:
        return not_found()
    count_click(counter(), found, info, request.args.get("m", ""), request.method, request.headers,
                request.remote_addr or "", keys)
    if found.link == TRAP:
        return not_found(info.publication)
    return Response(status=302, headers={"Location": found.url, **dict(REDIRECT_HEADERS)})


class _SendCache:
    """Send id -> SendInfo, for a minute; the database is asked at most once a minute a send."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._found: dict[int, tuple[float, SendInfo]] = {}
        self._lock = threading.Lock()

    def publication_named_in(self, token: str):
        """For the colours of the not-found page only: the publication of the send a
        bad token claims, if that send exists (nothing else is believed)."""
        send = token.split(".", 1)[0]
        if not (0 < len(send) <= 12 and send.isascii() and send.isalnum()):
            return None
        return self.get(int(send, 36)).publication

    def get(self, send_id: int) -> SendInfo:
        now = time.monotonic()
        cached = self._found.get(send_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            info = _look_up(self.settings, send_id)
        except Exception as exc:  # the database is away: the signature is enough to redirect
            log.warning("click redirected without the database: %s", exc)
            return cached[1] if cached else SendInfo(exists=True)
        with self._lock:
            if len(self._found) > 10_000:
                self._found.clear()
            self._found[send_id] = (now + CACHE_SECONDS, info)
        return info


def _look_up(settings, send_id: int) -> SendInfo:
    with session_scope(settings) as session:
        row = session.execute(
            select(PublicationRow).join(IssueRow, IssueRow.publication_id == PublicationRow.id)
            .join(Send, Send.issue_id == IssueRow.id).where(Send.id == send_id)
        ).scalar_one_or_none()
        if row is None:
            return SendInfo(exists=False)
        publication = SimpleNamespace(id=row.id, slug=row.slug, name=row.name, settings=dict(row.settings or {}),
                                      language=row.language, postal_address=row.postal_address)
        per_person = (row.sending or {}).get("clicks") == CLICKS_PER_PERSON
        return SendInfo(exists=True, publication=publication, per_person=per_person)


# --- web copy page views ------------------------------------------------------------------


def _count_page_view(response: Response) -> Response:
    """A view of an issue or article page of the web copy: counted per page and day, no cookie."""
    if (request.endpoint in COUNTED_PAGES and response.status_code == 200 and request.method == "GET"
            and not request_rule(request.method, request.headers)):
        args = request.view_args or {}
        publication_id = _publication_id(args.get("publication_slug", ""))
        if publication_id:
            path = f"{args.get('issue_slug')}/" + (f"{args['article_slug']}/" if args.get("article_slug") else "")
            counter().page_view(publication_id, path[:300], datetime.now(timezone.utc).date())
    return response


def _publication_id(slug: str) -> int | None:
    _publication_ids = current_app.extensions.setdefault("newsletter.click_publications", {})
    now = time.monotonic()
    cached = _publication_ids.get(slug)
    if cached and cached[0] > now:
        return cached[1]
    try:
        with database() as session:
            found = session.scalar(select(PublicationRow.id).where(PublicationRow.slug == slug))
    except Exception:
        return None
    if len(_publication_ids) > 1000:
        _publication_ids.clear()
    _publication_ids[slug] = (now + CACHE_SECONDS, found)
    return found
