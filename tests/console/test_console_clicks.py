"""The console's clicks page: an issue sent through the console, clicked by people and
fetched by a gateway, seen by an editor: human beside machine and unsure, by link and
section, over the first hours, beside earlier issues, and as CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest

from newsletter.web import create_app
from tests.clicks_world import BROWSER, SCANNER, links_of, send_through_console
from tests.console_world import EDITOR, log_in, make_world


@pytest.fixture
def clicked(settings):
    world = make_world(settings, subscribers=6)
    app = create_app(settings)
    draft_id, mail = send_through_console(settings, world, app)
    counter = app.extensions["newsletter.clicks"]
    import time

    counter.clock = lambda: time.time() + 600  # read ten minutes after delivery
    client = app.test_client()
    path = lambda url: "/" + url.split("://", 1)[1].split("/", 1)[1]
    first, second, gateway = mail.accepted[0], mail.accepted[1], mail.accepted[2]
    client.get(path(links_of(first)[6]), headers={"User-Agent": BROWSER})  # NHS 111
    client.get(path(links_of(second)[6]), headers={"User-Agent": BROWSER})
    client.get(path(links_of(second)[8]), headers={"User-Agent": BROWSER})  # the first news item
    for url in links_of(gateway):
        client.head(path(url), headers={"User-Agent": SCANNER})
        client.get(path(url), headers={"User-Agent": SCANNER})
    counter.flush()
    editor = app.test_client()
    log_in(editor, EDITOR)
    return editor, draft_id


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def test_the_clicks_page_shows_people_beside_machines_by_link_and_section(clicked):
    editor, draft_id = clicked
    response = editor.get(f"/console/issues/{draft_id}/clicks")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    shown = text(response)
    assert re.search(r'data-field="delivered">6<', page) and re.search(r'data-field="messages">2<', page)
    assert re.search(r'data-field="human">3<', page) and re.search(r'data-field="machine">28<', page)
    nhs = re.search(r'<tr data-link="7">(.*?)</tr>', page, re.DOTALL).group(1)
    assert "https://111.nhs.uk/" in nhs and "NHS 111" in nhs
    assert [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', nhs)] == [7, 2, 0, 2]  # number, human, unsure, machine
    assert "Opens are not counted" in shown and "Privacy Protection" in shown
    assert "<script" not in page  # the charts are SVG, drawn without JavaScript
    assert "(this issue)" in shown
    assert "reader00" not in page  # no person anywhere


def test_the_results_page_links_to_the_clicks_and_the_csv_has_every_link(clicked):
    editor, draft_id = clicked
    assert f"/console/issues/{draft_id}/clicks" in editor.get(f"/console/issues/{draft_id}/results").get_data(as_text=True)
    response = editor.get(f"/console/issues/{draft_id}/clicks.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["link", "url", "section", "human", "machine", "unsure"]
    assert ["7", "https://111.nhs.uk/", "NHS 111", "2", "2", "0"] in rows
    assert len(rows) == 1 + 14 + 1  # the header, every link, the hidden one
    assert rows[-1][:3] == ["trap", "", "(the hidden link)"] and rows[-1][4] == "2"


def test_with_per_person_a_subscribers_page_shows_their_own_clicks(settings):
    import time

    from sqlalchemy import select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Subscriber

    world = make_world(settings, subscribers=2)
    app = create_app(settings)
    _draft_id, mail = send_through_console(settings, world, app, clicks="per_person")
    app.extensions["newsletter.clicks"].clock = lambda: time.time() + 600
    [ann] = [e for e in mail.accepted if e.recipient == "reader000@example.com"]
    app.test_client().get("/" + links_of(ann)[6].split("://", 1)[1].split("/", 1)[1], headers={"User-Agent": BROWSER})
    app.extensions["newsletter.clicks"].flush()
    with session_scope(settings) as session:
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
    editor = app.test_client()
    log_in(editor, EDITOR)
    reader = text(editor.get(f"/console/publications/{world.slug}/subscribers/{ids['reader000@example.com']}"))
    other = text(editor.get(f"/console/publications/{world.slug}/subscribers/{ids['reader001@example.com']}"))
    assert "Clicked a link in" in reader and "https://111.nhs.uk/ (human)" in reader
    assert "Clicked a link in" not in other


def test_the_click_map_shows_each_links_human_clicks_on_the_email(clicked):
    editor, draft_id = clicked
    assert f"/console/issues/{draft_id}/clicks/map" in editor.get(f"/console/issues/{draft_id}/clicks").get_data(as_text=True)
    response = editor.get(f"/console/issues/{draft_id}/clicks/map")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "script-src" not in response.headers["Content-Security-Policy"]
    nhs = re.search(r'href="https://111\.nhs\.uk/"[^>]*>.*?</a><span title="([^"]+)"[^>]*>(\d+)</span>', page, re.DOTALL)
    assert nhs.groups() == ("2 human, 0 unsure, 2 machine", "2")
    assert page.count('<span title="') == 14  # every counted link, none of the others
