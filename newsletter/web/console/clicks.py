"""An issue's clicks in the console: by link and section, over the first 72 hours,
beside the last ten issues; and the same as CSV. Charts are SVG: no JavaScript."""

from __future__ import annotations

from flask import Response

from newsletter.console.clicks import clicks_page
from newsletter.feedback.click_results import FIRST_HOURS, clicks_csv
from newsletter.web.console import blueprint, page
from newsletter.web.console.issues import load
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
