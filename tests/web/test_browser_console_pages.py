"""Publications, lists and the picture library in real headless Chromium, on PostgreSQL:
an admin edits a publication and sees the preview and the contrast check follow
the typing; a wrong address is refused at its field; an editor makes a list and
gets its sign-up snippet; a picture too large in pixels is refused as such, a
good one is added and picked from its thumbnail in an image section. axe-core
finds no violation of any impact on these pages at 1280 and 375 pixels, and
they do not scroll sideways on a phone."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from dataclasses import replace

import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.serving import make_server

from newsletter.config import settings_from
from newsletter.console import bundles, drafts
from newsletter.store.db import session_scope
from newsletter.store.models import DraftFile, MailingList, PublicationRow
from newsletter.web import create_app
from tests.conftest import free_port
from tests.console_world import ADMIN, EDITOR, make_world, sample_zip
from tests.web.browser import Steps, axe_problems, wait_for_heading

pytestmark = pytest.mark.slow

WIDTHS = (1280, 375)


@pytest.fixture
def console(tmp_path, postgres_url, migrate):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=postgres_url,
                       secret_keys=("browser-test-key",), base_url=base_url)
    migrate(settings.effective_database_url)
    world = make_world(settings)
    with session_scope(settings) as session:
        files = bundles.read_issue_zip(sample_zip()).files
        drafts.create_draft(session, world.publication_id, "2021-09", files, EDITOR)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, base_url
    server.shutdown()
    thread.join(timeout=10)


def every_violation(driver) -> list[str]:
    """axe-core's violations of any impact on the page shown."""
    return axe_problems(driver, impacts=("minor", "moderate", "serious", "critical"))


def checked_at_both_widths(driver) -> None:
    """No axe-core violation and no sideways scrolling, at 1280 and at 375 pixels."""
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        problems = every_violation(driver)
        assert not problems, f"{driver.current_url} at {width} px:\n" + "\n".join(problems)
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), \
            f"{driver.current_url} scrolls sideways at {width} px"
    driver.set_window_size(1280, 900)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 94, 184)).save(out, "PNG")
    return out.getvalue()


def huge_png() -> bytes:
    """A PNG whose header says 20,000 x 20,000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_publications_lists_and_pictures_in_the_browser(browser, console, tmp_path):
    settings, base_url = console
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 900)

    # An admin opens the publications and edits one.
    steps.log_in(ADMIN)
    steps.follow("Publications")
    wait_for_heading(browser, "Publications")
    checked_at_both_widths(browser)
    steps.follow("Together We're Better")
    wait_for_heading(browser, "Together We're Better (together-were-better)")
    checked_at_both_widths(browser)
    assert steps.find("#contrast-summary").text == "Every pair passes."

    # The preview and the contrast check follow the typing, before anything is saved.
    text = steps.find("#f-colours-text")
    text.clear()
    text.send_keys("#bbbbbb")
    steps.wait(lambda: "too faint" in steps.find("#contrast-summary").text, "the contrast check to follow")
    assert "#bbbbbb on #ffffff" in steps.find("#contrast").text
    colour = browser.execute_script("return getComputedStyle(document.querySelector('.m-body')).color")
    assert colour == "rgb(187, 187, 187)"
    name = steps.find("#f-name")
    name.clear()
    name.send_keys("Together News")
    assert steps.find(".m-band p").text == "Together News"
    # (The preview shows faint colours faintly, as the email would: axe is asked after they are readable again.)
    text.clear()
    text.send_keys("#212b32")
    steps.wait(lambda: steps.find("#contrast-summary").text == "Every pair passes.", "the check to pass again")

    # A wrong address is refused at its field; what was typed stays.
    address = steps.find("#f-from_email")
    address.clear()
    address.send_keys("news at example.org")
    steps.press("Save")
    wait_for_heading(browser, "Together We're Better (together-were-better)")
    assert "not an email address" in steps.find("#f-from_email-error-1").text
    assert steps.find("#f-from_email").get_attribute("aria-invalid") == "true"
    assert steps.find("#f-name").get_attribute("value") == "Together News"
    assert steps.find("#problems a[href='#f-from_email']")
    checked_at_both_widths(browser)
    address = steps.find("#f-from_email")
    address.clear()
    address.send_keys("news@example.org")
    steps.press("Save")
    assert steps.notice().startswith("The publication is saved.")
    with session_scope(settings) as session:
        assert session.scalars(select(PublicationRow.name)).one() == "Together News"
    browser.save_screenshot(str(tmp_path / "publication.png"))

    # An editor makes a list and gets what to paste into a website.
    steps.log_in(EDITOR)
    steps.follow("Lists and segments")
    steps.follow("New list")
    wait_for_heading(browser, "New list")
    checked_at_both_widths(browser)
    steps.find("#f-name").send_keys("Staff news")
    steps.find("#f-slug").send_keys("staff news")
    steps.press("Make the list")
    wait_for_heading(browser, "New list")
    assert "cannot name a list" in steps.find("#f-slug-error-1").text
    checked_at_both_widths(browser)
    slug = steps.find("#f-slug")
    slug.clear()
    slug.send_keys("staff")
    steps.press("Make the list")
    wait_for_heading(browser, "Staff news (staff)")
    checked_at_both_widths(browser)
    link = steps.find("#signup-link").get_attribute("href")
    assert link == f"{base_url}/subscribe/together-were-better/staff"
    snippet = steps.find("#snippet").get_attribute("value")
    assert f'<form action="{link}" method="get">' in snippet
    with session_scope(settings) as session:
        assert session.scalars(select(MailingList.name).where(MailingList.slug == "staff")).one() == "Staff news"

    # The snippet, pasted into a page, opens the sign-up form with the address filled in.
    (tmp_path / "site.html").write_text(f"<!doctype html><title>A website</title>{snippet}")
    browser.get(f"file://{tmp_path / 'site.html'}")
    steps.find("#newsletter-email").send_keys("reader@example.com")
    old = steps.find("html")
    steps.find("button").click()
    steps.wait(lambda: steps.left(old), "the sign-up page")
    wait_for_heading(browser, "Subscribe to Staff news")
    assert steps.find("#email").get_attribute("value") == "reader@example.com"

    # Pictures: too many pixels is said so, with the description kept; a good one joins the library.
    browser.get(f"{base_url}/console/pictures?publication=together-were-better")
    wait_for_heading(browser, "Picture library")
    checked_at_both_widths(browser)
    (tmp_path / "huge.png").write_bytes(huge_png())
    (tmp_path / "team.png").write_bytes(png(480, 320))
    steps.find("#f-image").send_keys(str(tmp_path / "huge.png"))
    steps.find("#f-alt").send_keys("The team at the Pride stall")
    steps.press("Add to the library")
    wait_for_heading(browser, "Picture library")
    error = steps.find("#f-image-error-1").text
    assert "too many pixels" in error and "damaged" not in error
    assert steps.find("#f-alt").get_attribute("value") == "The team at the Pride stall"
    checked_at_both_widths(browser)
    steps.find("#f-image").send_keys(str(tmp_path / "team.png"))
    steps.press("Add to the library")
    assert "team.png (480 x 320 pixels) is in the library" in steps.notice()
    checked_at_both_widths(browser)

    # ... and is picked from its thumbnail in an image section, its description with it.
    with session_scope(settings) as session:
        draft_id = session.scalars(select(DraftFile.draft_id)).first()
    browser.get(f"{base_url}/console/issues/{draft_id}/sections/05-vaccination-chart.md")
    wait_for_heading(browser, "05-vaccination-chart.md (image, 05-vaccination-chart.md)")
    alt = steps.find("#f-alt")
    alt.clear()
    summary = steps.find("details.picker summary")
    if steps.find("details.picker").get_attribute("open") is None:
        summary.click()
    steps.find("input[name='src--pick'][value='team.png']").click()
    assert steps.find("#f-src").get_attribute("value") == "team.png"
    assert steps.find("#f-alt").get_attribute("value") == "The team at the Pride stall"
    steps.accessible()
    steps.press("Save this section")
    assert "05-vaccination-chart.md is saved" in steps.notice()
    with session_scope(settings) as session:
        saved = {f.name: f.data for f in session.scalars(select(DraftFile).where(DraftFile.draft_id == draft_id))}
    assert "team.png" in saved
    assert b"src: team.png" in saved["05-vaccination-chart.md"]
    assert b'alt: "The team at the Pride stall"' in saved["05-vaccination-chart.md"]
