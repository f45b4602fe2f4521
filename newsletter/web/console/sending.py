"""How each publication's mail leaves, for the people who work on it.

Thin: ``newsletter.sending.lanes.sending_summary`` says what the ops page and
``newsletter publications show`` say. A secret a publication names is shown
as where it is and "set" or "not set", never its value.
"""

from __future__ import annotations

from flask import abort

from newsletter.sending.lanes import sending_summary
from newsletter.web.console import blueprint, page, visible_publications
from newsletter.web.pages import database, settings


@blueprint.get("/sending")
def sending_settings():
    with database() as db:
        publications = visible_publications(db)
        if not publications:
            abort(403)
        shown = [(row, sending_summary(settings(), row)) for row in publications]
    return page("console/sending.html", publications=shown)
