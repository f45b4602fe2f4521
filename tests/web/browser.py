"""What the browser tests share: where Chromium is, how to wait for a page, and
the steps of a user in the console (each page checked with axe-core on the way).

The ``browser`` fixture (tests/conftest.py) starts Chromium with these flags; the
screenshot scripts start it the same way (``screenshot_settings``, ``photographer``).
"""

from __future__ import annotations

import tempfile
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import AXE_SCRIPT, REQUIRE_SERVICES
from tests.console_world import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
SUBSCRIBERS = 6  # the readers of the ``console`` fixture's publication (tests/web/conftest.py)


class Chromium:
    """A headless Chromium kept for the tests of one process, made as new for each."""

    # What a test may have changed that outlives its pages.
    RESET = (("Network.clearBrowserCookies", {}), ("Network.clearBrowserCache", {}),
             ("Emulation.clearDeviceMetricsOverride", {}), ("Emulation.setEmulatedMedia", {"media": "", "features": []}))

    def __init__(self, profile: Path):
        self.profile, self.driver, self.window = profile, None, None

    def fresh(self):
        if self.driver is not None:
            try:
                self.reset()
            except Exception:  # noqa: BLE001 - a browser left unusable (an alert, a crash): start another
                self.quit()
        if self.driver is None:
            self.start()
        return self.driver

    def start(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        profile = tempfile.mkdtemp(dir=self.profile)  # a folder of its own: one that crashed may have left a lock
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(30)
        self.window = self.driver.get_window_size()

    def reset(self) -> None:
        driver = self.driver
        driver.get("about:blank")
        for command, arguments in self.RESET:
            driver.execute_cdp_cmd(command, arguments)
        driver.set_window_size(self.window["width"], self.window["height"])
        driver.get_log("browser")  # what the last test's pages logged is not this test's

    def quit(self) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None


def screenshot_settings(folder: Path):
    """Settings for a screenshot script: a migrated SQLite database and the web
    copies in ``folder``, and a free port on loopback for ``photographer``."""
    from newsletter.config import settings_from
    from newsletter.store.migrate import upgrade
    from tests.conftest import free_port

    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(folder / "var")}), secret_keys=("screenshots",),
                       base_url=f"http://127.0.0.1:{free_port()}", web_copy_dir=folder / "web")
    upgrade(settings.effective_database_url)
    return settings


@contextmanager
def photographer(app, settings, email: str, profile: Path) -> Iterator:
    """``app`` served at ``settings.base_url`` and a headless Chromium without
    scroll bars, 1280 x 900, logged in to the console as ``email``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", urlsplit(settings.base_url).port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(1280, 900)
        driver.get(f"{settings.base_url}/console/login")
        driver.find_element("id", "email").send_keys(email)
        driver.find_element("id", "password").send_keys(PASSWORD)
        driver.find_element("css selector", "main button[type=submit]").click()
        wait_for_heading(driver, "Issues")
        yield driver
    finally:
        driver.quit()
        server.shutdown()


def wait_for_heading(browser, text: str) -> None:
    """After a click the old page may still be there: wait for the new one's heading."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shows(b) -> bool:
        try:
            return b.find_element(By.TAG_NAME, "h1").text == text
        except StaleElementReferenceException:
            return False
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False  # the heading found was the old page's, being torn down: look again
            raise

    WebDriverWait(browser, 20).until(shows, f"the page headed {text!r}")


def axe_problems(driver, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of these impacts (serious and critical unless told) on the page shown."""
    if not AXE_SCRIPT.is_file():
        message = "axe-core is not installed (scripts/install-test-services installs it)"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    driver.execute_script(AXE_SCRIPT.read_text())
    violations = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                   nodes: v.nodes.map(n => n.target.join(' '))}))))
          .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
    """)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][:3]}" for v in violations
            if v["impact"] in impacts]


class Steps:
    def __init__(self, driver, base_url: str):
        self.driver, self.base_url, self.checked = driver, base_url, []

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def accessible(self) -> None:
        problems = axe_problems(self.driver)
        assert not problems, f"{self.driver.current_url}:\n" + "\n".join(problems)
        self.checked.append(self.driver.current_url)

    def wait(self, condition, what: str, seconds: float = 30):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # A page that polls replaces its elements as it goes: one found just before
        # the swap is asked again at the next poll, not taken for a failure.
        return WebDriverWait(self.driver, seconds, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(), what)

    def notice(self) -> str:
        return self.wait(lambda: (n := self.finds("p.notice")) and n[0].text, "a notice")

    def log_in(self, email: str) -> None:
        self.driver.delete_all_cookies()
        self.driver.get(f"{self.base_url}/console/")
        wait_for_heading(self.driver, "Log in")
        self.accessible()
        self.find("#email").send_keys(email)
        self.find("#password").send_keys(PASSWORD)
        self.find("main button[type=submit]").click()
        wait_for_heading(self.driver, "Issues")
        self.accessible()

    def press(self, label: str) -> None:
        """Press the button and wait for the page it leads to (the old page goes stale)."""
        from selenium.webdriver.common.by import By

        old = self.find("html")
        [button] = [b for b in self.driver.find_elements(By.CSS_SELECTOR, "main button") if b.text == label]
        button.click()
        self.wait(lambda: self.left(old), f"the page after {label!r}")

    def follow(self, link_text: str) -> None:
        from selenium.webdriver.common.by import By

        old = self.find("html")
        self.driver.find_element(By.LINK_TEXT, link_text).click()
        self.wait(lambda: self.left(old), f"the page after {link_text!r}")

    def left(self, old) -> bool:
        """True once ``old`` (the last page's root) is gone; asked again while Chromium is mid-navigation."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support import expected_conditions

        try:
            return expected_conditions.staleness_of(old)(self.driver)
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False  # the old page is being torn down: look again at the next poll
            raise
