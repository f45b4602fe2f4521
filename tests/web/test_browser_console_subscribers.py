"""Subscribers and the suppression list in real headless Chromium, on PostgreSQL:
an editor searches, opens a subscriber and takes them off a list; a wrong
address on the suppression list is refused at its field; another provider's
list is uploaded there; an admin erases. The
pages fit a 375 px wide phone, and axe-core finds no serious or critical
violation on any of them."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from newsletter.audience.subscribers import add_subscriber, create_list
from newsletter.config import settings_from
from newsletter.store.db import session_scope
from newsletter.store.models import Membership, Subscriber, Suppression
from newsletter.web import create_app
from tests.conftest import free_port
from tests.console_world import ADMIN, EDITOR, make_world
from tests.web.browser import Steps, wait_for_heading

pytestmark = pytest.mark.slow

ADA = "Ada.Lovelace@example.org"


@pytest.fixture
def console(tmp_path, postgres_url, migrate):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=postgres_url,
                       secret_keys=("browser-test-key",), base_url=base_url)
    migrate(settings.effective_database_url)
    world = make_world(settings, subscribers=12)
    with session_scope(settings) as session:
        create_list(session, world.slug, "staff", "Staff news")
        add_subscriber(session, ADA, "Ada Lovelace", ["everyone", "staff"], {"organisation": "Analytical Engines"},
                       publication_slug=world.slug)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, base_url
    server.shutdown()
    thread.join(timeout=10)


def lists_of(settings, email: str) -> set[int]:
    with session_scope(settings) as session:
        return set(session.scalars(select(Membership.list_id).join(Subscriber).where(Subscriber.email == email)))


def fits(driver) -> bool:
    """Nothing wider than the window: no sideways scrolling on a phone."""
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_search_open_a_subscriber_take_them_off_a_list_and_erase(browser, console, tmp_path):
    from selenium.webdriver.common.by import By

    settings, base_url = console
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 1000)

    steps.log_in(EDITOR)
    steps.follow("Subscribers")
    wait_for_heading(browser, "Subscribers of Together We're Better")
    steps.accessible()
    assert len(steps.finds("tr[data-subscriber]")) == 13

    steps.find("#q").send_keys("LOVELACE")
    steps.press("Search")
    wait_for_heading(browser, "Subscribers of Together We're Better")
    assert [row.text for row in steps.finds("tr[data-subscriber] td:first-child")] == [ADA]
    steps.accessible()

    steps.follow(ADA)
    wait_for_heading(browser, "Ada Lovelace")
    steps.accessible()
    assert "Analytical Engines" in steps.find("main").text
    assert len(lists_of(settings, ADA)) == 2
    old = steps.find("html")
    steps.find("tr[data-list=staff] button[aria-label='Remove from Staff news']").click()
    steps.wait(lambda: steps.left(old), "the page after Remove")
    assert steps.notice() == "Removed from “Staff news”."
    assert not steps.finds("tr[data-list=staff]") and len(lists_of(settings, ADA)) == 1
    assert f"Removed from a list: Staff news — by {EDITOR}, in the console" in steps.find(".timeline").text
    steps.accessible()
    assert not browser.find_elements(By.PARTIAL_LINK_TEXT, "Erase")  # editors do not erase
    subscriber_url = browser.current_url

    # On a phone: the same page, nothing cut off sideways.
    browser.set_window_size(375, 800)
    browser.get(subscriber_url)
    wait_for_heading(browser, "Ada Lovelace")
    assert fits(browser)
    steps.accessible()
    browser.set_window_size(1280, 1000)

    # The suppression list refuses a wrong address at its field, and keeps what was typed.
    browser.get(f"{base_url}/console/suppressions")
    wait_for_heading(browser, "Suppression list")
    steps.accessible()
    steps.find("#email").send_keys("ada@lovelace")
    steps.find("#new-reason").send_keys("asked by phone")
    steps.press("Never mail this address")
    wait_for_heading(browser, "Suppression list")
    assert "field email: 'ada@lovelace' is not an email address" in steps.find("#add-problems").text
    assert steps.find("#email").get_attribute("value") == "ada@lovelace"
    steps.accessible()
    browser.set_window_size(375, 800)
    assert fits(browser)
    browser.set_window_size(1280, 1000)

    # Another provider's list: the good rows are taken, the bad one named by its line; a file that is not
    # UTF-8 stores nothing. Both pages fit a phone.
    old_list = tmp_path / "old-provider.csv"
    old_list.write_text("email,reason,note\ngone@example.org,cleaned,\nnot-an-address,spam,\n", encoding="utf-8")
    steps.find("#import-file").send_keys(str(old_list))
    steps.press("Suppress the addresses in this file")
    wait_for_heading(browser, "Suppression list")
    assert steps.find("#import-report").text == ("From old-provider.csv: 1 address suppressed now, 0 were already, "
                                                 "1 row rejected.")
    assert "old-provider.csv:3: 'not-an-address' is not an email address" in steps.find("#import-rejected").text
    steps.accessible()
    browser.set_window_size(375, 800)
    assert fits(browser)
    steps.accessible()
    browser.set_window_size(1280, 1000)
    old_list.write_bytes(b"email\ncaf\xe9@example.org\n")
    steps.find("#import-file").send_keys(str(old_list))
    steps.press("Suppress the addresses in this file")
    wait_for_heading(browser, "Suppression list")
    assert "old-provider.csv:2: the file is not UTF-8 text" in steps.find("#import-problems").text
    steps.accessible()
    browser.set_window_size(375, 800)
    assert fits(browser)
    browser.set_window_size(1280, 1000)

    # An admin is told what erasing goes, and erases.
    steps.log_in(ADMIN)
    browser.get(subscriber_url)
    wait_for_heading(browser, "Ada Lovelace")
    steps.follow(f"Erase {ADA}…")
    wait_for_heading(browser, f"Erase {ADA}?")
    steps.accessible()
    steps.press("Erase for good")
    wait_for_heading(browser, "Subscribers of Together We're Better")
    assert "is erased" in steps.notice()
    assert not lists_of(settings, ADA)
    with session_scope(settings) as session:
        assert session.scalar(select(Suppression.reason).where(Suppression.email.startswith("sha256:"))) == "erased"
    assert len(steps.checked) >= 9
