"""Screenshots of the comms console for the docs: the issue list, the editor with its
preview (also on a phone, 375 px wide), the results page, a CSV import (its mapping and its report), the segment form, one subscriber's page and the suppression list. Not a test; run it after changing the console's looks:

    .venv/bin/python -m tests.screenshots_console docs/images
    .venv/bin/python -m tests.screenshots_console /tmp/shots --narrow   # also the new pages 375 px wide, to look at

It runs the app on loopback with a SQLite database in a temporary folder, makes three
issues through the console's own forms, delivers one in-process to a memory transport,
and photographs the pages in headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.web import create_app
from tests.console_world import APPROVER, EDITOR, form_fields, log_in, make_world, post, sample_zip, upload


def prepare(settings, world, app) -> int:
    from newsletter.sending.delivery import Deliverer
    from newsletter.sending.lifecycle import claim_due_sends, finish_sends
    from newsletter.store.models import Batch, Draft
    from newsletter.audience.subscribers import unsubscribe
    from tests.memory_transport import MemoryTransport

    editor, approver = app.test_client(), app.test_client()
    log_in(editor, EDITOR)
    log_in(approver, APPROVER)
    upload(editor, sample_zip(), publication_id=world.publication_id)
    with session_scope(settings) as session:
        sent_id = session.scalars(select(Draft.id)).one()
    page = f"/console/issues/{sent_id}"
    post(editor, f"{page}/submit", page=page)
    post(approver, f"{page}/approve", page=page)
    post(editor, f"{page}/schedule", {"lists": "everyone", "when": "now"}, page=page)
    transport = MemoryTransport()
    transport.permanent["reader007@example.com"] = (550, "5.1.1", "<reader007@example.com>: user unknown")
    transport.permanent["reader019@example.com"] = (552, "5.2.2", "<reader019@example.com>: mailbox full")
    with session_scope(settings) as session:
        claim_due_sends(session, settings)
    with session_scope(settings) as session:
        deliverer = Deliverer(settings, transport)
        for batch_id in session.scalars(select(Batch.id)).all():
            deliverer.deliver_batch(session, batch_id)
    with session_scope(settings) as session:
        finish_sends(session)
        unsubscribe(session, "reader003@example.com")

    for slug, title in (("2021-10", "October 2021"), ("2021-11", "November 2021")):
        post(editor, "/console/new", {"how": "copy", "publication": str(world.publication_id), "slug": slug},
             page="/console/new")
        with session_scope(settings) as session:
            draft_id = session.scalars(select(Draft.id).where(Draft.slug == slug)).one()
        page = f"/console/issues/{draft_id}"
        fields = form_fields(editor.get(page).get_data(as_text=True), f"{page}/manifest")
        fields |= {"title": f"Together We're Better: {title}", "subject": f"Together We're Better: {title}"}
        if slug == "2021-11":
            fields["preheader"] = ""  # a warning for the picture
        editor.post(f"{page}/manifest", data=fields)
        if slug == "2021-10":
            post(editor, f"{page}/submit", page=page)
    return sent_id


def photograph_people(driver, base_url: str, settings, world, app, out: Path) -> None:
    """One subscriber with a history worth showing, and the suppression list (also 375 px wide, for a look)."""
    from newsletter.audience.subscribers import add_subscriber, create_list
    from newsletter.audience.suppressions import add_suppression
    from newsletter.feedback.events import Event, record_events
    from newsletter.store.models import Delivery, utcnow

    with session_scope(settings) as session:
        create_list(session, world.slug, "staff", "Staff briefing")
        person = add_subscriber(session, "reader005@example.com", "Priya Shah", ["staff"],
                                {"organisation": "Stoke-on-Trent City Council", "team": "Finance"},
                                publication_slug=world.slug)
        person_id = person.id
    with session_scope(settings) as session:
        delivery = session.scalars(select(Delivery).where(Delivery.email == "reader005@example.com")).first()
        record_events(session, settings, [Event("ses", "s1", "bounced", "reader005@example.com", utcnow(), bounce="soft",
                                                delivery_id=delivery.id if delivery else None, detail="452 mailbox full")])
        for n, reason, note in ((11, "complaint", "ses complained"), (12, "manual", "asked by phone to stop all mail")):
            add_suppression(session, f"reader{n:03d}@example.com", reason, note)
    editor = app.test_client()
    log_in(editor, EDITOR)
    page = f"/console/publications/{world.slug}/subscribers/{person_id}"
    post(editor, f"{page}/unsubscribe", {"list": str(_list_id(settings, "staff"))}, page=page)
    post(editor, "/console/suppressions", {"email": "old.address@example.org", "reason": "left the council in May"},
         page="/console/suppressions")
    for width, height, name in ((1280, 1500, "console-subscriber.png"), (375, 2200, "console-subscriber-375.png")):
        driver.set_window_size(width, height)
        driver.get(f"{base_url}{page}")
        driver.save_screenshot(str(out / name))
    for width, name in ((1280, "console-suppressions.png"), (375, "console-suppressions-375.png")):
        driver.set_window_size(width, 900)
        driver.get(f"{base_url}/console/suppressions")  # the whole page: the forms, then the entries
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height + 100, 5000))
        driver.save_screenshot(str(out / name))


def _list_id(settings, slug: str) -> int:
    from newsletter.store.models import MailingList

    with session_scope(settings) as session:
        return session.scalar(select(MailingList.id).where(MailingList.slug == slug))


IMPORT_CSV = (
    "Email,Full name,Organisation,Job title,Notes\n"
    + "".join(f"{first.lower()}.{last.lower()}@{domain},{first} {last},{org},{title},\n" for first, last, domain, org, title in (
        ("Asha", "Patel", "stoke.gov.uk", "Stoke-on-Trent City Council", "Clerk"),
        ("Tom", "Hughes", "stoke.gov.uk", "Stoke-on-Trent City Council", "Planning officer"),
        ("Mei", "Chen", "uhnm.nhs.uk", "University Hospitals of North Midlands", "Ward manager"),
        ("Daniel", "Okafor", "staffs.gov.uk", "Staffordshire County Council", "Social worker"),
        ("Ruth", "Evans", "stoke.gov.uk", "Stoke-on-Trent City Council", "Clerk"),
    ))
    + "not-an-address,Sam Smith,Newcastle-under-Lyme Borough Council,Clerk,\n"
    + '"=HYPERLINK(""http://evil.example"",""click"")",Formula,Elsewhere,,a formula\n'
    + "ASHA.PATEL@stoke.gov.uk,Asha Patel,Stoke-on-Trent City Council,Clerk,again\n"
)


def prepare_import(settings, app) -> tuple[int, int]:
    """An upload waiting for its mapping, and one imported (with rejected rows): their ids."""
    import io

    from tests.console_world import csrf_of

    editor = app.test_client()
    log_in(editor, EDITOR)
    ids = []
    for _ in range(2):
        token = csrf_of(editor, "/console/imports/new")
        response = editor.post("/console/imports", data={
            "csrf_token": token, "publication": "together-were-better", "list": "everyone", "status": "confirmed",
            "file": (io.BytesIO(IMPORT_CSV.encode()), "council-contacts.csv")}, content_type="multipart/form-data")
        ids.append(int(response.headers["Location"].rsplit("/", 1)[-1]))
    page = editor.get(f"/console/imports/{ids[1]}").get_data(as_text=True)
    fields = form_fields(page, f"/console/imports/{ids[1]}/mapping")
    fields |= {"target-0": "email", "target-1": "name", "target-2": "field", "target-3": "field", "target-4": "ignore"}
    editor.post(f"/console/imports/{ids[1]}/mapping", data=fields)
    return ids[0], ids[1]


def main(out: Path, narrow: bool = False) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.web.browser import photographer, screenshot_settings

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = screenshot_settings(Path(tmp))
        base_url = settings.base_url
        world = make_world(settings, subscribers=40)
        app = create_app(settings)
        sent_id = prepare(settings, world, app)
        mapping_id, report_id = prepare_import(settings, app)
        with photographer(app, settings, EDITOR, Path(tmp) / "profile") as driver:
            driver.save_screenshot(str(out / "console-issues.png"))
            driver.set_window_size(1280, 1500)
            driver.get(f"{base_url}/console/issues/{sent_id + 2}")
            driver.save_screenshot(str(out / "console-editor.png"))
            driver.set_window_size(375, 2400)  # the same page on a phone: nothing reaches past the screen
            driver.get(f"{base_url}/console/issues/{sent_id + 2}")
            driver.save_screenshot(str(out / "console-issue-375.png"))
            driver.set_window_size(1280, 1000)
            driver.get(f"{base_url}/console/issues/{sent_id}/results")
            driver.save_screenshot(str(out / "console-results.png"))
            for width, suffix in ((1280, ""), *([(375, "-375")] if narrow else [])):
                driver.set_window_size(width, 1300 if width > 400 else 1800)
                driver.get(f"{base_url}/console/imports/{mapping_id}")
                driver.save_screenshot(str(out / f"console-import{suffix}.png"))
                driver.get(f"{base_url}/console/imports/{report_id}")
                driver.save_screenshot(str(out / f"console-import-report{suffix}.png"))
                driver.get(f"{base_url}/console/segments/new?publication=together-were-better")
                for n, (field, operator, value) in enumerate((("organisation", "contains", "city council"),
                                                              ("job title", "is", "clerk"))):
                    driver.find_element("css selector", f"#field-{n} option[value='{field}']").click()
                    driver.find_element("css selector", f"#operator-{n} option[value='{operator}']").click()
                    driver.find_element("id", f"value-{n}").send_keys(value)
                driver.find_element("id", "segment-name").send_keys("council-clerks")
                driver.find_element("css selector", "button[value=preview]").click()
                WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", "[data-field=count]"))
                driver.set_window_size(width, 1750 if width > 400 else 2600)
                driver.save_screenshot(str(out / f"console-segment{suffix}.png"))
            photograph_people(driver, base_url, settings, world, app, out)
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(paths[0] if paths else "docs/images"), narrow="--narrow" in sys.argv)
