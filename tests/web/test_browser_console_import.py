"""A CSV import, a segment and the pages around them in real headless Chromium:
an editor uploads a CSV, checks the column mapping, watches the progress bar
while a real worker (started as the Procfile starts it) imports the file,
reads the report and downloads the rejected rows; then builds a segment,
counts it and saves it. axe-core checks every page: no serious or critical
violation.
"""

from __future__ import annotations

import csv
import io

import pytest

from newsletter.console import imports
from tests.console_world import EDITOR
from tests.web.browser import Steps, wait_for_heading

pytestmark = pytest.mark.slow
ROWS = 3000


def people_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Email", "Name", "Team", "Notes"])
    for n in range(ROWS):
        writer.writerow([f"person{n:05d}@example.org", f"Person {n}", ("staff", "board", "partner")[n % 3], "x"])
    writer.writerow(["not an address", "Nobody", "staff", ""])  # line ROWS + 2
    writer.writerow(["=HYPERLINK(\"http://evil.example\")", "Formula", "staff", ""])  # line ROWS + 3
    return out.getvalue()


def test_import_a_csv_watch_it_run_download_the_rejected_rows_then_build_a_segment(  # noqa: F811
        browser, console, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    monkeypatch.setattr(imports, "INLINE_ROWS", 100)  # so this file goes to the worker
    pipeline, world, base_url = console
    steps = Steps(browser, base_url)
    browser.set_window_size(1280, 1000)
    steps.log_in(EDITOR)

    steps.follow("Lists and segments")
    wait_for_heading(browser, "Lists and segments")
    steps.accessible()
    old = steps.find("html")
    steps.find("section[aria-labelledby=h-imports] a.button").click()
    steps.wait(lambda: steps.left(old), "the upload page")
    wait_for_heading(browser, "Import subscribers from a CSV file")
    steps.accessible()
    assert f"at most {imports.MAX_BYTES // 1024 // 1024} MB" in steps.find("main").text

    # Upload; the preview and the guessed mapping.
    path = tmp_path / "people.csv"
    path.write_text(people_csv(), encoding="utf-8")
    steps.find("#import-file").send_keys(str(path))
    steps.press("Upload and check the columns")
    assert "check the columns" in steps.notice()
    steps.accessible()
    assert [Select(steps.find(f"#target-{n}")).first_selected_option.get_attribute("value") for n in range(4)] == \
        ["email", "name", "field", "field"]
    assert "person00000@example.org" in steps.find("section[aria-labelledby=h-preview]").text
    Select(steps.find("#target-3")).select_by_value("ignore")
    steps.press(f"Import {ROWS + 2:,} rows")

    # The progress bar, until a worker takes the job; then the report replaces it.
    steps.wait(lambda: steps.finds("#h-progress"), "the progress bar")
    assert steps.find("#import-bar").get_attribute("value") == "0"
    steps.accessible()
    pipeline.start_worker()
    pipeline.start_beat()
    # The report first: a quick import replaces the bar before a poll sees it move.
    moved = steps.wait(lambda: steps.finds("#h-report")
                       or int(steps.find("#import-bar").get_attribute("value") or 0) > 0,
                       "the bar to move or the report", 120)
    assert moved
    steps.wait(lambda: steps.finds("#h-report"), "the report", 120)
    report_url = browser.current_url
    numbers = {e.get_attribute("data-field"): e.text for e in steps.finds(".numbers [data-field]")}
    assert numbers == {"added": str(ROWS), "updated": "0", "unchanged": "0", "rejected": "2", "not_resubscribed": "0"}
    steps.accessible()
    lines = [row.find_elements(By.CSS_SELECTOR, "td")[0].text for row in steps.finds("section[aria-labelledby=h-rejected] tbody tr")]
    assert lines == [str(ROWS + 2), str(ROWS + 3)]

    # The download, fetched as the browser would (its session cookie, same origin).
    href = steps.find("section[aria-labelledby=h-rejected] a.button").get_attribute("href")
    text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);", href)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["line", "column", "severity", "problem", "what to do"]
    assert [r[0] for r in rows[1:]] == [str(ROWS + 2), str(ROWS + 3)]
    # The rejected formula comes back as text: quoted (the message's quote and the export's).
    assert rows[2][3].startswith("''=HYPERLINK")

    # A segment: a rule, its count and ten people, saved by name.
    steps.follow("Lists and segments")
    wait_for_heading(browser, "Lists and segments")
    steps.accessible()
    steps.follow("New segment")
    wait_for_heading(browser, "New segment")
    steps.accessible()
    Select(steps.find("#field-0")).select_by_value("team")
    Select(steps.find("#operator-0")).select_by_value("is")
    steps.find("#value-0").send_keys("board")
    steps.press("Count and show ten")
    steps.wait(lambda: steps.finds("[data-field=count]"), "the count")
    assert steps.find("[data-field=count]").text == f"{ROWS // 3:,}"
    assert steps.find("[data-field=condition]").text == 'team is "board"'
    steps.accessible()
    Select(steps.find("#operator-1")).select_by_value("after")
    Select(steps.find("#field-1")).select_by_value("joined")
    steps.find("#value-1").send_keys("yesterday")
    steps.press("Count and show ten")
    error = steps.wait(lambda: steps.finds("#error-1"), "the error beside rule 2")[0].text
    assert "joined is a date, and yesterday is not one" in error
    steps.accessible()
    steps.find("#value-1").clear()
    Select(steps.find("#field-1")).select_by_value("")  # an empty row is left out
    steps.find("#segment-name").send_keys("board-team")
    steps.press("Save the segment")
    assert "Segment board-team saved" in steps.notice()
    row = steps.find('tr[data-segment="board-team"]')
    assert row.find_elements(By.CSS_SELECTOR, "td.n")[0].text == str(ROWS // 3)
    steps.accessible()

    # The same pages on a phone.
    browser.set_window_size(375, 800)
    for url in (browser.current_url, report_url, f"{base_url}/console/segments/new",
                f"{base_url}/console/imports/new"):
        browser.get(url)
        steps.wait(lambda: steps.finds("main h1"), "the page")
        steps.accessible()
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
