"""A person reading the sample issue in a real browser (headless Chromium through Selenium)
and clicking one of its links twice: taken to the page each time, counted human twice,
and nothing counted as a machine.

The sample publication counts clicks (``sending.clicks: aggregate``). The app runs on
loopback in a thread; the issue is sent in-process to an in-memory transport, and its
HTML part is opened in the browser as a mail client would show it. Its web copy is
served by the same app, so the "Read more" link leads back to it through ``/c/``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from newsletter.audience.subscribers import add_subscriber, create_list, get_list
from newsletter.authoring.content import load_issue
from newsletter.authoring.render import render_issue
from newsletter.authoring.webcopy import write_site
from newsletter.config import settings_from
from newsletter.sending.delivery import Deliverer
from newsletter.sending.scheduling import schedule_send
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import session_scope
from newsletter.store.issues import store_issue
from newsletter.store.models import ClickCount
from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE, free_port
from tests.memory_transport import MemoryTransport

pytestmark = pytest.mark.slow


@pytest.fixture
def delivered(tmp_path, sqlite_url, migrate):
    port = free_port()
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-clicks-key",), base_url=f"http://127.0.0.1:{port}",
                       web_copy_dir=tmp_path / "web")
    migrate(settings.effective_database_url)
    issue = load_issue(SAMPLE_ISSUE)
    publication = replace(issue.publication, web_base_url=f"{settings.base_url}/{issue.publication.slug}/")
    rendered = render_issue(replace(issue, publication=publication))
    write_site(settings.web_copy_dir, publication, [rendered])
    mail = MemoryTransport()
    with session_scope(settings) as session:
        row = store_issue(session, rendered)
        create_list(session, publication.slug, "news", "Monthly news")
        add_subscriber(session, "ann@example.com", "Ann", ["news"], publication_slug=publication.slug)
        schedule_send(session, row, get_list(session, publication.slug, "news"), at=None)
    with session_scope(settings) as session:
        deliverer = Deliverer(settings, mail)
        for batch_id in claim_due_sends(session, settings):
            deliverer.deliver_batch(session, batch_id)
    [envelope] = mail.accepted
    html = message_from_bytes(envelope.message, policy=policy.default).get_body(("html",)).get_content()
    (tmp_path / "message.html").write_text(html, encoding="utf-8")
    app = create_app(settings)
    app.extensions["newsletter.clicks"].clock = lambda: time.time() + 300  # read five minutes after it came
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, app, tmp_path / "message.html"
    server.shutdown()
    thread.join(timeout=10)


def test_a_person_clicking_a_link_twice_is_taken_there_and_counted_human_twice(browser, delivered):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings, app, message = delivered
    article = f"{settings.base_url}/together-were-better/2021-09/system-savings/"
    for _ in range(2):
        browser.get(message.as_uri())
        links = browser.find_elements(By.CSS_SELECTOR, "a[href*='/c/']")
        visible = [link for link in links if link.is_displayed()]
        assert len(links) == 15 and len(visible) == 14  # the trap link is there, and nobody can see it
        target = visible[1]  # "Read more" of the second priority, an article of the web copy
        assert target.text.strip()
        target.click()
        WebDriverWait(browser, 20).until(lambda b: b.current_url == article, "the article page")
        assert browser.find_element(By.TAG_NAME, "h1").text

    app.extensions["newsletter.clicks"].flush()
    with session_scope(settings) as session:
        rows = session.execute(select(ClickCount.link, ClickCount.human, ClickCount.machine, ClickCount.unsure)).all()
    assert rows == [(2, 2, 0, 0)]
