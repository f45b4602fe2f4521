"""The comms console's whole flow in real headless Chromium, with a real worker
delivering over SMTP (issue 10's ten steps):

1. log in as an editor; 2. create an issue by uploading the sample issue's zip;
3. edit a teaser; 4. break a link, see its check fail and link to the field, fix it;
5. send a proof and see it arrive; 6. submit the issue; 7. log in as an approver
and approve it; 8. schedule it; 9. a real worker delivers it over SMTP; 10. the
results page shows the counts the ledger holds.

axe-core checks every page on the way: no serious or critical violation. The
app runs on loopback in a thread; the worker and beat are processes started as
the Procfile starts them (tests/pipeline.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from werkzeug.serving import make_server

from newsletter.sending.scheduling import when_from_utc
from newsletter.store.db import session_scope
from newsletter.store.models import utcnow
from newsletter.web import create_app
from tests.conftest import free_port
from tests.console_world import APPROVER, EDITOR, make_world, sample_zip
from tests.web.browser import SUBSCRIBERS, Steps, wait_for_heading

pytestmark = pytest.mark.slow

def test_write_check_proof_approve_schedule_deliver_and_see_the_results(browser, console, smtp, tmp_path):
    from selenium.webdriver.common.by import By

    pipeline, world, base_url = console
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 1000)

    # 1. An editor logs in.
    steps.log_in(EDITOR)

    # 2. ... and uploads the sample issue as a .zip.
    archive = tmp_path / "2021-09.zip"
    archive.write_bytes(sample_zip())
    steps.follow("New issue")
    wait_for_heading(browser, "New issue")
    steps.accessible()
    steps.find("#zip").send_keys(str(archive))
    steps.press("Upload")
    wait_for_heading(browser, "Together We're Better Monthly Newsletter draft")
    assert "Issue 2021-09 created." in steps.notice()
    steps.accessible()
    issue_url = browser.current_url

    # 3. Edit a teaser.
    steps.follow("ICS Core Priorities")
    wait_for_heading(browser, "ICS Core Priorities (teasers, 02-priorities.md)")
    steps.accessible()
    heading = steps.find("#f-items-0-heading")
    heading.clear()
    heading.send_keys("Frailty: a strategy for healthy ageing")
    steps.press("Save this section")
    assert "02-priorities.md is saved. The checks found 0 errors in it." in steps.notice()
    assert steps.find("#f-items-0-heading").get_attribute("value") == "Frailty: a strategy for healthy ageing"

    # 4. Break a link: the check fails, its finding links to the field; fix it.
    url = steps.find("#f-items-0-url")
    field_id = "f-items-0-url"
    good = url.get_attribute("value")
    url.clear()
    url.send_keys("http://www.example.org/not-secure")
    steps.press("Save this section")
    assert "The checks found 1 error in it." in steps.notice()
    finding = steps.find(".findings li.error a")
    assert finding.get_attribute("href").endswith(f"#{field_id}")
    steps.accessible()
    finding.click()
    steps.wait(lambda: browser.current_url.endswith(f"#{field_id}"), "the link to the field")
    url = steps.find(f"#{field_id}")
    url.clear()
    url.send_keys(good)
    steps.press("Save this section")
    assert "The checks found 0 errors in it." in steps.notice()

    # 5. Send a proof and see it arrive.
    browser.get(issue_url)
    steps.find("#proof-to").send_keys("proofreader@example.org")
    steps.press("Send a proof")
    assert "proofreader@example.org sent" in steps.notice()
    proof = steps.wait(lambda: [m for m in smtp.messages if m.recipients == ["proofreader@example.org"]], "the proof")
    message = message_from_bytes(proof[0].data, policy=policy.default)
    assert message["Subject"].startswith("[PROOF] ")
    assert "Frailty: a strategy for healthy ageing" in message.get_body(("html",)).get_content()

    # 6. Submit it for approval.
    steps.press("Send for approval")
    assert "Sent for approval." in steps.notice()
    assert steps.find("#state").text == "awaiting approval"
    steps.accessible()
    steps.wait(lambda: any(m.recipients == [APPROVER] for m in smtp.messages), "the approver's email")

    # 7. An approver logs in and approves it.
    steps.log_in(APPROVER)
    steps.follow("Together We're Better Monthly Newsletter")
    steps.wait(lambda: steps.finds("#state"), "the issue page")
    steps.accessible()
    steps.press("Approve")
    assert "Approved" in steps.notice()
    assert steps.find("#state").text == "approved"

    # 8. The editor schedules it, for a few minutes from now, then chooses to send it now.
    steps.log_in(EDITOR)
    browser.get(issue_url)
    steps.follow("Schedule…")
    wait_for_heading(browser, "Schedule “Together We're Better Monthly Newsletter”")
    steps.accessible()
    at = when_from_utc(utcnow() + timedelta(hours=1), "Europe/London").local
    steps.find("input[name=lists][value=everyone]").click()
    steps.find("#at").send_keys(f"{at:%Y-%m-%d %H:%M}")
    steps.press("Check this time and these lists")
    steps.wait(lambda: steps.finds("p.ok"), "the time, read back")
    assert f"{at:%H:%M}" in steps.find("p.ok").text and "UTC" in steps.find("p.ok").text
    steps.accessible()
    # The web app is on loopback here: the step says subscribers could not follow its links, and
    # a real send takes them only when the editor ticks that this is a test.
    assert "Subscribers could not follow this publication's links" in steps.find("main").text
    steps.find("input[name=allow_private_links]").click()
    [label] = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "main button") if b.text.startswith("Schedule for")]
    steps.press(label)
    assert "Scheduled to everyone" in steps.notice()
    assert steps.find("#state").text == "scheduled"
    steps.follow("Send now…")
    wait_for_heading(browser, "Send “Together We're Better Monthly Newsletter” now?")
    assert f"It goes to {SUBSCRIBERS} recipients" in steps.find("main").text
    steps.accessible()
    steps.press(f"Send now to {SUBSCRIBERS} recipients")
    assert "Sending now" in steps.notice()

    # 9. A real worker delivers it over SMTP.
    pipeline.start_worker()
    pipeline.start_beat()
    expected = {f"reader{n:03d}@example.com" for n in range(SUBSCRIBERS)}
    pipeline.wait_for(lambda: expected <= {r for m in smtp.messages for r in m.recipients}, 120, "every subscriber's copy")
    counts = Counter(r for m in smtp.messages for r in m.recipients if r in expected)
    assert set(counts.values()) == {1}

    # 10. The results page shows the ledger's counts.
    from sqlalchemy import select

    from newsletter.sending.lifecycle import progress
    from newsletter.store.models import Send

    with session_scope(pipeline.settings) as session:
        send_id = session.scalars(select(Send.id)).one()
    pipeline.wait_for(lambda: pipeline.progress(send_id).state == "finished", 120, "the send to finish")
    browser.get(issue_url + "/results")
    steps.wait(lambda: steps.find("h1 [data-field=state]").text == "sent", "the results page to say sent")
    with session_scope(pipeline.settings) as session:
        ledger = progress(session, send_id)
    section = steps.find(f'[data-send="{send_id}"]')
    assert section.find_element(By.CSS_SELECTOR, '[data-field="sent"]').text == str(ledger.counts.get("sent", 0))
    assert section.find_element(By.CSS_SELECTOR, '[data-field="sent"]').text == str(SUBSCRIBERS)
    assert section.find_element(By.CSS_SELECTOR, '[data-field="failed"]').text == "0"
    assert section.find_element(By.CSS_SELECTOR, '[data-field="possible_duplicates"]').text == \
        str(ledger.possible_duplicates)
    steps.accessible()
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]


@pytest.fixture
def quiet_console(tmp_path, sqlite_url, migrate):
    """The app alone (no worker), on SQLite: for pages that need no delivery."""
    from dataclasses import replace

    from newsletter.config import settings_from

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-console-key",), base_url=base_url, web_copy_dir=tmp_path / "web")
    migrate(settings.effective_database_url)
    world = make_world(settings, subscribers=3)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, world, base_url
    server.shutdown()
    thread.join(timeout=10)


def test_every_page_passes_axe_and_works_from_the_keyboard(browser, quiet_console, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.console_world import ADMIN

    settings, world, base_url = quiet_console
    steps = Steps(browser, base_url)
    for width in (1280, 800):  # a desktop and a tablet
        browser.set_window_size(width, 1000)
        browser.get(f"{base_url}/console/forgot")
        steps.accessible()
    browser.set_window_size(1280, 1000)
    steps.log_in(ADMIN)

    # Keyboard alone: the skip link first, then through the form to a button that works.
    browser.get(f"{base_url}/console/new")
    body = steps.find("body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to the content"
    archive = tmp_path / "2021-09.zip"
    archive.write_bytes(sample_zip())
    steps.find("#zip").send_keys(str(archive))
    steps.find("#zip-slug").send_keys("2021-09", Keys.ENTER)  # Enter submits, as a keyboard user would
    steps.wait(lambda: browser.current_url.rsplit("/", 1)[-1].isdigit(), "the new issue's page")
    issue_url = browser.current_url

    pages = [issue_url, f"{issue_url}?scheme=dark&images=off", f"{base_url}/console/accounts",
             f"{base_url}/console/account", f"{base_url}/console/", f"{base_url}/console/?state=draft",
             f"{issue_url}/schedule", f"{issue_url}/results", f"{base_url}/console/issues/999",
             f"{base_url}/console/sending"]
    pages += [f"{issue_url}/sections/{name}" for name in ("01-chair.md", "02-priorities.md", "04-programmes.md",
                                                          "05-vaccination-chart.md", "06-nhs-111.md", "07-news.md")]
    for page in pages:
        browser.get(page)
        steps.accessible()
    assert len(steps.checked) >= len(pages)
    browser.get(f"{base_url}/console/issues/999")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
