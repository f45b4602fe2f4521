"""What stopped a team using the console, each in real headless Chromium: the login
limit that counted successful logins, findings hidden behind other findings or away
from their field, a time in the past accepted, server details shown to users, an
Approve button offered to who may not approve, pages that scroll sideways on a phone.

The last test walks every console and ops page for each role at 375 and 1280 px:
axe-core finds no violation of any impact and nothing scrolls sideways.
The app runs on loopback in a thread on SQLite; nothing is delivered.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace

import pytest
from werkzeug.serving import make_server

from newsletter.config import settings_from
from newsletter.store.migrate import upgrade
from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE, free_port
from tests.console_world import EDITOR, PASSWORD, make_world, sample_zip
from tests.web.test_browser import browser, wait_for_heading  # noqa: F401 - the fixture: skips or fails without Chromium
from tests.web.test_browser_console import Steps

LOGIN_ATTEMPTS = 3


@pytest.fixture
def site(tmp_path, sqlite_url):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-defects-key",), base_url=base_url, web_copy_dir=tmp_path / "web",
                       ops_login_attempts=LOGIN_ATTEMPTS)
    upgrade(settings.effective_database_url)
    world = make_world(settings, subscribers=3)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, world, base_url
    server.shutdown()
    thread.join(timeout=10)


def type_login(steps: Steps, email: str, password: str) -> None:
    steps.driver.get(f"{steps.base_url}/console/login")
    wait_for_heading(steps.driver, "Log in")
    steps.find("#email").send_keys(email)
    steps.find("#password").send_keys(password)
    steps.press("Log in")


def test_a_team_logs_in_all_day_from_one_address_while_guessing_is_still_limited(browser, site):  # noqa: F811
    settings, world, base_url = site
    steps = Steps(browser, base_url)
    # More logins from one address than the limit allows failures: every one gets in.
    for _ in range(LOGIN_ATTEMPTS + 2):
        browser.delete_all_cookies()
        type_login(steps, EDITOR, PASSWORD)
        wait_for_heading(browser, "Issues")
    # A typing mistake, then the right password: the account's count starts again.
    browser.delete_all_cookies()
    type_login(steps, EDITOR, "not the password")
    assert "The email address or the password is not right." in steps.find("main [role=alert]").text
    # Guessing meets the limit, and the page says so (even for the right password next).
    for _ in range(LOGIN_ATTEMPTS - 1):
        type_login(steps, EDITOR, "another guess")
    type_login(steps, EDITOR, PASSWORD)
    assert "Too many failed attempts to log in" in steps.find("main [role=alert]").text
    steps.accessible()


def test_the_old_ops_login_address_leads_to_the_one_login_and_back_to_the_dashboard(browser, site):  # noqa: F811
    from tests.console_world import OPERATOR

    settings, world, base_url = site
    steps = Steps(browser, base_url)
    browser.get(f"{base_url}/ops/login")
    wait_for_heading(browser, "Log in")
    assert browser.current_url.startswith(f"{base_url}/console/login")
    steps.find("#email").send_keys(OPERATOR)
    steps.find("#password").send_keys(PASSWORD)
    steps.press("Log in")
    wait_for_heading(browser, "Queues, workers and sends")
    assert browser.current_url == f"{base_url}/ops/"
    old = steps.find("html")
    steps.find("header form button").click()
    steps.wait(lambda: steps.left(old), "the page after logging out")
    wait_for_heading(browser, "Log in")
    assert "You are logged out." in steps.notice()


def broken_sample(tmp_path):
    """The sample issue with three problems in three files: a picture without its alt
    text, a link that is not https and a subject longer than phones show."""
    root = tmp_path / "broken"
    shutil.copytree(SAMPLE_ISSUE, root)
    chart = root / "05-vaccination-chart.md"
    chart.write_text("".join(line for line in chart.read_text().splitlines(keepends=True) if not line.startswith("alt:")))
    priorities = root / "02-priorities.md"
    priorities.write_text(priorities.read_text().replace("url: https://", "url: http://", 1))
    manifest = root / "issue.yaml"
    manifest.write_text(manifest.read_text().replace(
        'subject: "', 'subject: "A subject much longer than any phone shows in its list of messages: ', 1))
    return root


def test_every_finding_is_shown_at_once_and_each_at_its_field(browser, site, tmp_path):  # noqa: F811
    settings, world, base_url = site
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 1000)
    steps.log_in(EDITOR)
    archive = tmp_path / "2021-09.zip"
    archive.write_bytes(sample_zip(broken_sample(tmp_path)))
    steps.follow("New issue")
    steps.find("#zip").send_keys(str(archive))
    steps.press("Upload")
    steps.wait(lambda: steps.finds(".findings li"), "the findings")
    findings = {li.text for li in steps.finds(".findings li")}
    # The picture's missing alt text does not hide the others.
    assert any("has no `alt` text" in text for text in findings), findings
    assert any("https" in text and text.startswith("ERROR") for text in findings), findings
    assert any("the subject is" in text for text in findings), findings
    steps.accessible()

    # The alt text's finding links to the alt text field, and the field shows it.
    [link] = [a for a in steps.finds(".findings li a") if "05-vaccination-chart.md" in a.text]
    assert link.get_attribute("href").endswith("#f-alt")
    old = steps.find("html")
    link.click()
    steps.wait(lambda: steps.left(old), "the image section")
    alt = steps.find("#f-alt")
    [described] = alt.get_attribute("aria-describedby").split()
    assert "has no `alt` text" in steps.find(f"#{described}").text
    assert steps.find(f"#{described}").is_displayed()
    steps.accessible()
