"""A subscriber's whole life in a real browser (headless Chromium through Selenium).

Sign up on the page, confirm from the link in the email, receive an issue,
read its web copy, leave with one POST of the List-Unsubscribe link (as a
mailbox provider does) and receive nothing from the next send.

The app runs on loopback in a thread; sends are driven in-process through
``newsletter.sending.lifecycle`` with an in-memory transport. Chromium and its driver
come from Debian (scripts/install-browser); nothing is downloaded here.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from werkzeug.serving import make_server

from newsletter.config import settings_from
from newsletter.authoring.content import load_issue
from newsletter.authoring.render import render_issue
from newsletter.sending.scheduling import schedule_send
from newsletter.sending.delivery import Deliverer
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import session_scope
from newsletter.store.issues import store_issue
from newsletter.audience.subscribers import add_subscriber, create_list, get_list
from newsletter.authoring.webcopy import write_site
from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE, free_port
from tests.memory_transport import MemoryTransport
from tests.web.browser import wait_for_heading

pytestmark = pytest.mark.slow

@pytest.fixture
def site(tmp_path, sqlite_url, migrate):
    """The app on a loopback port, the sample issue stored with its web copy served by the app."""
    port = free_port()
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-test-key",), base_url=f"http://127.0.0.1:{port}",
                       web_copy_dir=tmp_path / "web")
    migrate(settings.effective_database_url)
    issue = load_issue(SAMPLE_ISSUE)
    # In a deployment web_base_url points at this app: the email's links come here.
    publication = replace(issue.publication, web_base_url=f"{settings.base_url}/{issue.publication.slug}/")
    rendered = render_issue(replace(issue, publication=publication))
    write_site(settings.web_copy_dir, publication, [rendered])
    with session_scope(settings) as session:
        store_issue(session, rendered)
        create_list(session, publication.slug, "news", "Monthly news")
        add_subscriber(session, "bob@example.com", "Bob", ["news"], publication_slug=publication.slug)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, publication.slug, rendered.issue.slug
    server.shutdown()
    thread.join(timeout=10)


def send_issue(settings, publication_slug: str, issue_slug: str, *, resend: bool = False) -> MemoryTransport:
    """Schedule the issue to the list now and deliver every batch, as the workers would."""
    from newsletter.store.issues import get_issue

    mail = MemoryTransport()
    with session_scope(settings) as session:
        schedule_send(session, get_issue(session, publication_slug, issue_slug),
                      get_list(session, publication_slug, "news"), at=None, resend=resend)
        session.commit()
        deliverer = Deliverer(settings, mail)
        for batch_id in claim_due_sends(session, settings):
            deliverer.deliver_batch(session, batch_id)
    return mail


def received_by(mail: MemoryTransport, address: str):
    return [message_from_bytes(e.message, policy=policy.default) for e in mail.accepted if e.recipient == address]


def test_sign_up_confirm_receive_read_unsubscribe_and_receive_nothing_more(browser, site):
    from selenium.webdriver.common.by import By

    settings, publication_slug, issue_slug = site

    # Sign up on the page.
    browser.get(f"{settings.base_url}/subscribe/{publication_slug}/news")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Subscribe to Monthly news"
    browser.find_element(By.ID, "email").send_keys("ann@example.com")
    browser.find_element(By.ID, "name").send_keys("Ann")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for_heading(browser, "Check your inbox")

    # Confirm from the link in the email.
    [confirmation] = [message_from_bytes(p.read_bytes(), policy=policy.default)
                      for p in sorted(settings.outbox_dir.glob("*.eml"))]
    assert confirmation["To"].addresses[0].addr_spec == "ann@example.com"
    link = re.search(r"http://\S+/confirm/\S+", confirmation.get_body(("plain",)).get_content()).group(0)
    browser.get(link)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for_heading(browser, "You are subscribed")

    # Receive the issue, and read its web copy from the email's link, pictures and all.
    first = send_issue(settings, publication_slug, issue_slug)
    [issue_message] = received_by(first, "ann@example.com")
    html = issue_message.get_body(("html",)).get_content()
    web_link = re.search(r'href="([^"]+)"[^>]*>\s*View it as a web page', html).group(1)
    assert web_link == f"{settings.base_url}/{publication_slug}/{issue_slug}/"
    browser.get(web_link)
    assert browser.find_element(By.TAG_NAME, "h1").text
    logo = browser.find_element(By.CSS_SELECTOR, "header img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", logo) > 0
    assert "ann@example.com" not in browser.page_source

    # Leave, as a mailbox provider does it: one POST, no cookie, no page in between.
    unsubscribe = re.match(r"<([^>]+)>", issue_message["List-Unsubscribe"]).group(1)
    assert issue_message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    request = urllib.request.Request(unsubscribe, data=b"List-Unsubscribe=One-Click", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.url == unsubscribe  # answered directly, not redirected

    # Sent again (a resend: Bob has had it once), it reaches Bob and not Ann.
    second = send_issue(settings, publication_slug, issue_slug, resend=True)
    assert second.recipients() == ["bob@example.com"]
