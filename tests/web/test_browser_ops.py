"""The ops dashboard in a real browser (headless Chromium through Selenium):
log in, see a send's counts, pause it through the confirmation page, see it
paused, and see the page's own script keep the numbers current.

The app runs on loopback in a thread; the send is driven in-process through
``newsletter.sending.lifecycle`` with an in-memory transport, as in test_browser.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from werkzeug.serving import make_server

from newsletter.accounts import admins
from newsletter.config import settings_from
from newsletter.store.db import session_scope
from newsletter.web import create_app
from tests.conftest import free_port
from tests.memory_transport import MemoryTransport
from tests.web.browser import wait_for_heading
from tests.ops_world import OPERATOR, PASSWORD, deliver_batches, send_state, start_send

pytestmark = pytest.mark.slow


@pytest.fixture
def dashboard(tmp_path, sqlite_url, migrate):
    port = free_port()
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-ops-key",), base_url=f"http://127.0.0.1:{port}")
    migrate(settings.effective_database_url)
    with session_scope(settings) as session:
        admins.create_admin(session, OPERATOR, PASSWORD)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings
    server.shutdown()
    thread.join(timeout=10)


def cell(driver, send_id: int, field: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr[data-send="{send_id}"] [data-field="{field}"]').text


def test_log_in_see_a_send_pause_it_and_see_it_paused(browser, dashboard, rendered):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = dashboard
    transport = MemoryTransport()
    send_id = start_send(settings, rendered, 30)
    deliver_batches(settings, transport, send_id, 1)

    browser.get(f"{settings.base_url}/ops/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"
    browser.find_element(By.ID, "email").send_keys(OPERATOR)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for_heading(browser, "Queues, workers and sends")
    assert (cell(browser, send_id, "sent"), cell(browser, send_id, "pending")) == ("10", "20")

    # The page's script polls status.json and writes new numbers in place.
    deliver_batches(settings, transport, send_id, 2)
    WebDriverWait(browser, 20).until(lambda b: cell(b, send_id, "sent") == "20")
    assert cell(browser, send_id, "pending") == "10"

    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-send="{send_id}"]')
    row.find_element(By.LINK_TEXT, "Pause").click()
    wait_for_heading(browser, f"Pause send {send_id}?")
    assert send_state(settings, send_id) == "sending"  # nothing happens before the confirmation
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]:not(header button)").click()

    notice = WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "p.notice"))
    assert notice[0].text == f"Send {send_id} is paused."
    assert cell(browser, send_id, "state").startswith("paused")
    assert send_state(settings, send_id) == "paused"
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-send="{send_id}"]')
    assert [a.text for a in row.find_elements(By.CSS_SELECTOR, "a.button")] == ["Resume", "Cancel"]
    # No script error and nothing refused by the Content-Security-Policy (a missing favicon is not ours).
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]

