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
from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE, free_port
from tests.console_world import EDITOR, PASSWORD, make_world, sample_zip
from tests.web.browser import Steps, wait_for_heading

pytestmark = pytest.mark.slow

LOGIN_ATTEMPTS = 3


@pytest.fixture
def site(tmp_path, sqlite_url, migrate):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("browser-defects-key",), base_url=base_url, web_copy_dir=tmp_path / "web",
                       ops_login_attempts=LOGIN_ATTEMPTS)
    migrate(settings.effective_database_url)
    world = make_world(settings, subscribers=20)  # the walk's sent issue fails two of them
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


def test_a_team_logs_in_all_day_from_one_address_while_guessing_is_still_limited(browser, site):
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


def test_the_old_ops_login_address_leads_to_the_one_login_and_back_to_the_dashboard(browser, site):
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


def small_logo(settings, world, tmp_path) -> None:
    """The publication's logo, 100 pixels wide where 192 are needed: a warning about it."""
    from PIL import Image

    from newsletter.console.drafts import store_publication_files
    from newsletter.store.db import session_scope
    from newsletter.store.models import PublicationRow
    from tests.console_world import PUBLICATION_FOLDER

    folder = tmp_path / "publication"
    shutil.copytree(PUBLICATION_FOLDER, folder, ignore=shutil.ignore_patterns("issues"))
    Image.new("RGB", (100, 40), "#005eb8").save(folder / "logo.png")
    with session_scope(settings) as session:
        store_publication_files(session, session.get(PublicationRow, world.publication_id), folder)


def test_every_finding_is_shown_at_once_and_each_at_its_field(browser, site, tmp_path):
    settings, world, base_url = site
    small_logo(settings, world, tmp_path)
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
    # The logo's warning too, without the server's temporary folder in it.
    assert any("logo.png is 100 pixels wide" in text for text in findings), findings
    assert "/tmp" not in steps.find("main").text and "newsletter-draft" not in steps.find("main").text
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


def approved_issue(settings, world) -> int:
    """The sample issue, uploaded by the editor and approved, through the console's forms."""
    from sqlalchemy import select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Draft
    from tests.console_world import APPROVER, log_in, post, upload

    app = create_app(settings)
    editor, approver = app.test_client(), app.test_client()
    log_in(editor, EDITOR)
    log_in(approver, APPROVER)
    upload(editor, sample_zip(), publication_id=world.publication_id)
    with session_scope(settings) as session:
        draft_id = session.scalars(select(Draft.id).order_by(Draft.id.desc())).first()
    page = f"/console/issues/{draft_id}"
    post(editor, f"{page}/submit", page=page)
    post(approver, f"{page}/approve", page=page)
    return draft_id


def test_a_time_in_the_past_is_refused_in_the_forms_words_saying_the_time_it_is_there(browser, site):
    from datetime import timedelta

    from newsletter.sending.scheduling import when_from_utc
    from newsletter.store.models import utcnow

    settings, world, base_url = site
    draft_id = approved_issue(settings, world)
    steps = Steps(browser, base_url)
    steps.log_in(EDITOR)
    browser.get(f"{base_url}/console/issues/{draft_id}/schedule")
    wait_for_heading(browser, "Schedule “Together We're Better Monthly Newsletter”")
    # The example is a date to come.
    example = steps.find("#at").get_attribute("placeholder")
    assert example > f"{when_from_utc(utcnow(), 'Europe/London').local:%Y-%m-%d %H:%M}", example
    yesterday = when_from_utc(utcnow() - timedelta(days=1), "Europe/London").local
    steps.find("input[name=lists][value=everyone]").click()
    steps.find("#at").send_keys(f"{yesterday:%Y-%m-%d %H:%M}")
    steps.press("Check this time and these lists")
    problem = steps.wait(lambda: steps.finds("#at-problem"), "the problem with the time")[0].text
    assert "is in the past: it is now" in problem and "in Europe/London" in problem, problem
    assert "--" not in steps.find("main").text
    assert not [b for b in steps.finds("main button") if b.text.startswith("Schedule for")]
    assert steps.find("#at").get_attribute("aria-describedby") == "at-problem"
    steps.accessible()
    # A time that happens twice when the clocks go back is flagged.
    at = steps.find("#at")
    at.clear()
    at.send_keys(f"{next_fall_back(utcnow()):%Y-%m-%d} 01:30")
    steps.press("Check this time and these lists")
    note = steps.wait(lambda: [n.text for n in steps.finds("p.warn") if "happens twice" in n.text], "the DST note")[0]
    assert "the clocks go back" in note and "BST" in note, note
    assert [b for b in steps.finds("main button") if b.text.startswith("Schedule for")]


def next_fall_back(now):
    """The next last Sunday of October: Europe/London's clocks go back at 02:00 BST."""
    from datetime import date, timedelta

    for year in (now.year, now.year + 1):
        day = date(year, 10, 31)
        day -= timedelta(days=(day.weekday() + 1) % 7)
        if day > now.date():
            return day
    raise AssertionError("no autumn in two years")


def test_who_edited_an_issue_is_not_offered_the_approve_button_and_is_told_why(browser, site, tmp_path):
    from tests.console_world import ADMIN, APPROVER

    settings, world, base_url = site
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 1000)
    steps.log_in(ADMIN)  # an admin holds every role, approver too
    archive = tmp_path / "2021-09.zip"
    archive.write_bytes(sample_zip())
    steps.follow("New issue")
    steps.find("#zip").send_keys(str(archive))
    steps.press("Upload")
    steps.wait(lambda: steps.finds("#state"), "the issue page")
    issue_url = browser.current_url
    steps.press("Send for approval")
    assert steps.find("#state").text == "awaiting approval"
    assert not [b for b in steps.finds("main button") if b.text == "Approve"]
    assert "You edited this issue, so another approver must approve it." in steps.find("#not-yours").text
    steps.accessible()
    steps.log_in(APPROVER)
    browser.get(issue_url)
    assert [b for b in steps.finds("main button") if b.text == "Approve"]
    assert not steps.finds("#not-yours")


# --- every page, every role, a phone and a desktop ---------------------------------------------

WIDTHS = (1280, 375)
AXE_RUN = """
    const done = arguments[arguments.length - 1];
    axe.run(document, {resultTypes: ['violations'], reporter: 'no-passes', iframes: false})
      .then(r => done(r.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`)))
      .catch(e => done([`axe-error: ${e}`]));
"""
# How far the page reaches past the window's right edge, in CSS pixels, and what reaches furthest.
OVERFLOW = """
    const width = document.documentElement.clientWidth;
    let widest = null, right = width;
    for (const e of document.querySelectorAll('body *')) {
      const box = e.getBoundingClientRect();
      if (box.right > right + 0.5) { right = box.right; widest = e; }
    }
    const extra = Math.max(0, document.documentElement.scrollWidth - width);
    return extra ? `${extra}px wider than the window (${widest ? widest.tagName + '.' + widest.className : '?'})` : '';
"""


def page_problems(driver, axe: str) -> list[str]:
    """axe-core's violations of any impact and sideways scrolling, at each width, on the page shown."""
    problems = []
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        overflow = driver.execute_script(OVERFLOW)
        if overflow:
            problems.append(f"{width}px: {overflow}")
        if not driver.execute_script("return typeof axe !== 'undefined'"):
            driver.execute_script(axe)
        problems += [f"{width}px: {v}" for v in driver.execute_async_script(AXE_RUN)]
    return problems


def walk_setup(settings, world) -> dict[str, str]:
    """Issues in every state (sent with failures, approved, awaiting approval, draft), an import,
    a subscriber with a history and a suppression: the pages' paths by name."""
    from sqlalchemy import select

    from urllib.parse import urlsplit

    from newsletter.audience.suppressions import add_suppression
    from newsletter.accounts import invitations
    from newsletter.accounts import admins
    from newsletter.store.db import session_scope
    from newsletter.store.models import Draft, Send, Subscriber, Suppression
    from tests.console_world import APPROVER, form_fields, log_in, post
    from tests.screenshots_console import prepare, prepare_import

    app = create_app(settings)
    sent_id = prepare(settings, world, app)
    approver = app.test_client()
    log_in(approver, APPROVER)
    post(approver, f"/console/issues/{sent_id + 1}/approve", page=f"/console/issues/{sent_id + 1}")
    editor = app.test_client()
    log_in(editor, EDITOR)
    waiting = f"/console/issues/{sent_id + 2}"
    fields = form_fields(editor.get(waiting).get_data(as_text=True), f"{waiting}/manifest")
    editor.post(f"{waiting}/manifest", data=fields | {"preheader": "Our November news."})
    post(editor, f"{waiting}/submit", page=waiting)
    mapping_id, report_id = prepare_import(settings, app)
    with session_scope(settings) as session:
        invited = admins.invite_account(session, "new.colleague@example.org", world.publication_id, ["editor"])
        welcome = urlsplit(invitations.link_for(settings, invited, "invite")).path
        add_suppression(session, "reader012@example.com", "manual", "asked by phone to stop all mail")
        suppression_id = session.scalars(select(Suppression.id)).first()
        subscriber_id = session.scalars(select(Subscriber.id).where(Subscriber.email == "reader005@example.com")).one()
        send_id = session.scalars(select(Send.id)).first()
        draft_ids = list(session.scalars(select(Draft.id).order_by(Draft.id)))
    pub = f"/console/publications/{world.slug}"
    issue = f"/console/issues/{sent_id + 1}"
    pages = {
        "issues": "/console/", "new issue": "/console/new",
        "sent issue": f"/console/issues/{sent_id}", "results": f"/console/issues/{sent_id}/results",
        "clicks": f"/console/issues/{sent_id}/clicks",
        "approved issue": issue, "dark preview": f"{issue}?scheme=dark&images=off", "schedule": f"{issue}/schedule",
        "awaiting approval": f"/console/issues/{sent_id + 2}", "not found": "/console/issues/999",
        "subscribers": "/console/subscribers", "list of subscribers": f"{pub}/subscribers",
        "subscriber": f"{pub}/subscribers/{subscriber_id}", "erase": f"{pub}/subscribers/{subscriber_id}/erase",
        "suppressions": "/console/suppressions", "unsuppress": f"/console/suppressions/{suppression_id}/remove",
        "audience": "/console/audience", "import": "/console/imports/new",
        "import mapping": f"/console/imports/{mapping_id}", "import report": f"/console/imports/{report_id}",
        "segment": f"/console/segments/new?publication={world.slug}", "how mail is sent": "/console/sending",
        "account": "/console/account", "accounts": "/console/accounts",
        "ops dashboard": "/ops/", "ops publications": "/ops/publications",
        "ops retry": f"/ops/sends/{send_id}/retry-failed", "welcome": welcome,
        "click map": f"/console/issues/{sent_id}/clicks/map", "publications": "/console/publications",
        "new publication": "/console/publications/new", "publication": f"{pub}/edit",
        "new list": "/console/lists/new", "list": f"/console/lists/{world.slug}/everyone",
        "pictures": f"/console/pictures?publication={world.slug}",
    }
    sections = ("01-chair.md", "02-priorities.md", "04-programmes.md", "05-vaccination-chart.md", "06-nhs-111.md",
                "07-news.md")
    pages |= {f"section {name}": f"/console/issues/{draft_ids[-1]}/sections/{name}" for name in sections}
    with session_scope(settings) as session:
        states = {d.id: d.state for d in session.scalars(select(Draft))}
    # (A sent issue's draft stays "scheduled"; its page says sent.)
    assert [states[n] for n in (sent_id, sent_id + 1, sent_id + 2)] == ["scheduled", "approved", "awaiting approval"]
    return pages


# The admin sees every page. The others see the same pages with fewer buttons and links: each
# visits those its role changes (the steps of an issue, the dashboard, a page it may not see).
ROLE_PAGES = {
    "editor": ("issues", "awaiting approval", "schedule", "ops dashboard"),
    "approver": ("awaiting approval", "approved issue"),
    "operator": ("ops dashboard", "sent issue"),
}


def test_every_page_for_every_role_has_no_axe_violation_and_no_sideways_scroll_at_375_and_1280(
        browser, site, tmp_path):
    from tests.conftest import AXE_SCRIPT
    from tests.console_world import ADMIN, APPROVER, OPERATOR

    settings, world, base_url = site
    pages = walk_setup(settings, world)
    axe = AXE_SCRIPT.read_text()
    steps = Steps(browser, base_url)
    found: dict[str, list[str]] = {}

    def visit(name: str, path: str) -> None:
        browser.get(base_url + path)
        problems = page_problems(browser, axe)
        if problems:
            found[f"{name} ({path})"] = problems

    for path in ("/console/login", "/console/forgot", pages["welcome"]):
        visit(path, path)
    for role, email in (("admin", ADMIN), ("editor", EDITOR), ("approver", APPROVER), ("operator", OPERATOR)):
        browser.set_window_size(1280, 900)
        steps.log_in(email)
        names = [name for name in pages if name != "welcome"] if role == "admin" else ROLE_PAGES[role]
        for name in names:
            visit(f"{role}: {name}", pages[name])
    assert not found, "\n".join(f"{page}:\n  " + "\n  ".join(problems) for page, problems in found.items())
