"""The preview: the email as a sample reader gets it, rendered by the code that sends it.

Served into frames of the issue page: at 600 and 375 pixels, light or dark,
pictures on or off; the plain-text part; the web copy and its article pages.
A rendering is kept per (draft, version) in this process, so the frames of
one page render the issue once.
"""

from __future__ import annotations

import html
import mimetypes
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from flask import Response, abort, request, url_for

from newsletter.authoring import placeholders
from newsletter.authoring.build import SAMPLE_READER
from newsletter.console import workflow
from newsletter.web.console import blueprint
from newsletter.web.console.issues import load
from newsletter.web.pages import database, settings

# Our own rendering of the editor's issue, shown in a frame of our own page: inline styles
# as email needs them, pictures from here or elsewhere, and never a script.
PREVIEW_POLICY = ("default-src 'none'; img-src 'self' https: data:; style-src 'unsafe-inline'; "
                  "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
# The email's own dark styles, as a client that honours the reader's dark setting
# shows them: the frame cannot be told the reader prefers dark, so the condition goes.
DARK_QUERY = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.IGNORECASE)
KEPT = 16


@dataclass(frozen=True)
class Preview:
    email_html: str  # placeholders filled for the sample reader; web links point at the preview
    text: str
    web_pages: dict[str, str]
    images: dict[str, bytes]  # "images/<name>" -> bytes
    problem: str = ""  # why there is no rendering


_cache: OrderedDict[tuple[str, int, int], Preview] = OrderedDict()
_lock = threading.Lock()


def preview_of(draft_id: int) -> Preview:
    with database() as db:
        draft, _publication, _roles = load(db, draft_id)
        key = (settings().effective_database_url, draft.id, draft.version)  # apps on two databases share the process
        with _lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        with workflow.rendering(db, settings(), draft) as (rendered, findings):
            if rendered is None:
                errors = [f for f in findings if f.is_error]
                made = Preview("", "", {}, {}, "; ".join(f"{f.where}: {f.message}" for f in errors[:5]))
            else:
                made = _made(rendered, url_for("console.preview_web", draft_id=draft_id, path=""))
    with _lock:
        _cache[key] = made
        while len(_cache) > KEPT:
            _cache.popitem(last=False)
    return made


def _made(rendered, web_root: str) -> Preview:
    values = {"name": SAMPLE_READER.name, "email": SAMPLE_READER.email, "web_url": web_root,
              "unsubscribe_url": SAMPLE_READER.unsubscribe_url, "preferences_url": SAMPLE_READER.preferences_url}
    email = placeholders.fill(rendered.html, values, escape_html=True).replace(rendered.issue.web_url, web_root)
    text = placeholders.fill(rendered.text, values, escape_html=False)
    images = {name: Path(path).read_bytes() for name, path in rendered.images.items()}
    return Preview(email, text, dict(rendered.web_pages), images)


def _page(body: str, kind: str = "text/html") -> Response:
    response = Response(body, mimetype=kind)
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def _not_rendered(preview: Preview) -> Response:
    return _page(f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not rendered</title>"
                 f"<p>The issue cannot be rendered yet: {html.escape(preview.problem)}</p></html>")


@blueprint.get("/issues/<int:draft_id>/preview/email")
def preview_email(draft_id: int):
    preview = preview_of(draft_id)
    if preview.problem:
        return _not_rendered(preview)
    body = preview.email_html
    if request.args.get("images") == "off":
        # As a mail client that blocks pictures shows it: alt text in their place.
        body = re.sub(r"(<img\b[^>]*?)\s+src=\"[^\"]*\"", r"\1", body, flags=re.IGNORECASE)
    if request.args.get("scheme") == "dark":
        body = DARK_QUERY.sub("@media all", body)
    return _page(body)


@blueprint.get("/issues/<int:draft_id>/preview/text")
def preview_text(draft_id: int):
    preview = preview_of(draft_id)
    if preview.problem:
        return _not_rendered(preview)
    return _page(f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Plain text</title>"
                 f"<pre style=\"white-space:pre-wrap;font:14px/1.4 monospace;margin:1rem\">"
                 f"{html.escape(preview.text)}</pre></html>")


@blueprint.get("/issues/<int:draft_id>/preview/web/", defaults={"path": ""})
@blueprint.get("/issues/<int:draft_id>/preview/web/<path:path>")
def preview_web(draft_id: int, path: str):
    preview = preview_of(draft_id)
    if preview.problem:
        return _not_rendered(preview)
    page = path + "index.html" if path == "" or path.endswith("/") else path
    if page in preview.web_pages:
        return _page(preview.web_pages[page])
    if path in preview.images:
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        response = Response(preview.images[path], mimetype=kind)
        response.headers["Cache-Control"] = "private, max-age=60"
        return response
    abort(404)
