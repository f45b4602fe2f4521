"""An issue's clicks in the console: by link and section, over the first 72 hours,
beside the last ten issues; and the same as CSV. Charts are SVG: no JavaScript."""

from __future__ import annotations

import html
import re

from flask import Response, url_for

from newsletter.console.clicks import clicks_page
from newsletter.feedback.click_results import FIRST_HOURS, clicks_csv
from newsletter.web.console import blueprint, page
from newsletter.web.console.issues import load
from newsletter.web.console.preview import _not_rendered, _page, preview_of
from newsletter.web.pages import database


@blueprint.get("/issues/<int:draft_id>/clicks")
def clicks(draft_id: int):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        view = clicks_page(db, draft)
        return page("console/clicks.html", publication=publication, draft=draft, view=view,
                    results=view.results, first_hours=FIRST_HOURS)


@blueprint.get("/issues/<int:draft_id>/clicks.csv")
def clicks_download(draft_id: int):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        view = clicks_page(db, draft)
        data = clicks_csv(view.results) if view.results else "link,url,section,human,machine,unsure\r\n"
    return Response(data, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{publication.slug}-{draft.slug}-clicks.csv"'})


_ANCHOR = re.compile(r'(<a\b[^>]*?\bhref="([^"]*)"[^>]*>.*?</a>)', re.IGNORECASE | re.DOTALL)
BADGE = ('<span title="{title}" style="display:inline-block;background:#ffb81c;color:#212b32;'
         'font:bold 12px/1.4 Arial,sans-serif;padding:0 6px;border-radius:9px;margin:0 4px;'
         'vertical-align:middle;text-decoration:none">{human}</span>')


@blueprint.get("/issues/<int:draft_id>/clicks/map")
def click_map(draft_id: int):
    """The email as the preview shows it, each counted link followed by its human clicks."""
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        view = clicks_page(db, draft)
        web_url = f"{publication.web_base_url.rstrip('/')}/{draft.slug}/"
    preview = preview_of(draft_id)
    web_root = url_for("console.preview_web", draft_id=draft_id, path="")  # the preview's web copy links
    if preview.problem:
        return _not_rendered(preview)
    figures = {link.url: link.figures for link in view.results.links} if view.results else {}

    def badge(match: re.Match) -> str:
        url = html.unescape(match.group(2))
        f = figures.get(web_url + url[len(web_root):] if url.startswith(web_root) else url)
        if f is None:
            return match.group(1)
        title = f"{f.human} human, {f.unsure} unsure, {f.machine} machine"
        return match.group(1) + BADGE.format(title=title, human=f.human)

    return _page(_ANCHOR.sub(badge, preview.email_html))
