"""Importing a CSV in the console (upload, preview, mapping, the import, its
report), the background job a worker runs, and downloading a list as CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select

from newsletter.audience.subscribers import add_subscriber
from newsletter.audience.suppressions import add_suppression
from newsletter.console import imports
from newsletter.store.db import session_scope
from newsletter.store.models import ImportJob, Subscriber
from newsletter.web import create_app
from tests.console_world import APPROVER, EDITOR, csrf_of, form_fields, log_in, make_world

GOOD = (
    "E-mail,Full name,Organisation,Notes\n"
    "ada@example.org,Ada Lovelace,Analytical Engines,first\n"
    "not-an-address,Nobody,Nowhere,\n"
    '"grace@example.org","=HYPERLINK(""http://evil.example"")",<b>Navy</b>,second\n'
    "ADA@example.org,Ada again,,\n"
)


@pytest.fixture
def world(settings):
    return make_world(settings, subscribers=2)


def upload(client, data: bytes | str, name: str = "people.csv", list_slug: str = "everyone", status: str = "confirmed"):
    token = csrf_of(client, "/console/imports/new")
    data = data.encode() if isinstance(data, str) else data
    return client.post("/console/imports", data={"csrf_token": token, "publication": "together-were-better", "list": list_slug,
                                                 "status": status, "file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def mapping_fields(html: str, action: str) -> dict[str, str]:
    """The form's inputs and, for each select, its selected option: what a browser posts."""
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    selects = {name: re.search(r'<option value="([^"]*)" selected', body).group(1)
               for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S)}
    return form_fields(html, action) | selects


def map_and_import(client, job_path: str, **changes):
    page = client.get(job_path).get_data(as_text=True)
    fields = mapping_fields(page, f"{job_path}/mapping") | changes
    return client.post(f"{job_path}/mapping", data=fields)


def jobs(settings) -> list[ImportJob]:
    with session_scope(settings) as session:
        return list(session.scalars(select(ImportJob).order_by(ImportJob.id)))


def audit_log(settings) -> list[tuple[str, str]]:
    from newsletter.store.models import AuditEntry

    with session_scope(settings) as session:
        return [(e.action, e.detail) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def subscriber(settings, email: str) -> Subscriber | None:
    with session_scope(settings) as session:
        return session.scalars(select(Subscriber).where(Subscriber.email_key == email.lower())).first()


def test_upload_preview_map_import_and_download_the_rejected_rows(world, editor):
    response = upload(editor, GOOD)
    assert response.status_code == 303, response.get_data(as_text=True)
    job_path = response.headers["Location"]
    page = editor.get(job_path).get_data(as_text=True)
    # The preview: escaped, the formula shown as the text it is.
    assert "&lt;b&gt;Navy&lt;/b&gt;" in page and "<b>Navy</b>" not in page
    assert "=HYPERLINK(&#34;http://evil.example&#34;)" in page or '=HYPERLINK(&quot;http://evil.example&quot;)' in page
    # The mapping, guessed from the header.
    fields = mapping_fields(page, f"{job_path}/mapping")
    assert [fields[f"target-{n}"] for n in range(4)] == ["email", "name", "field", "field"]
    assert fields["field-2"] == "organisation"

    response = map_and_import(editor, job_path, **{"target-3": "ignore", "field-2": "Employer"})
    assert response.status_code == 303
    report = editor.get(job_path).get_data(as_text=True)
    numbers = {key: int(value) for key, value in
               re.findall(r'data-field="(added|updated|unchanged|rejected)">(\d+)<', report)}
    assert numbers == {"added": 2, "updated": 0, "unchanged": 0, "rejected": 2}
    assert "The uploaded file has been deleted" in report
    [job] = jobs(world.settings)
    assert (job.state, job.data, job.rows_done, job.rows_total) == ("finished", None, 4, 4)

    ada = subscriber(world.settings, "ada@example.org")
    assert ada.name == "Ada Lovelace" and ada.attributes == {"employer": "Analytical Engines"}  # notes ignored
    grace = subscriber(world.settings, "grace@example.org")
    assert grace.name == '=HYPERLINK("http://evil.example")'  # stored as typed; neutralised on the way out

    download = editor.get(f"{job_path}/problems.csv")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.get_data(as_text=True))))
    assert rows[0] == ["line", "column", "severity", "problem", "what to do"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("3", "email"), ("5", "email")]
    assert "is also on line 2" in rows[2][3]
    assert ("imported a CSV file", "people.csv (4 rows) into everyone, import 1") in audit_log(world.settings)


def test_the_rejected_rows_file_keeps_formulas_as_text_as_the_clis_does():
    job = ImportJob(problems=[[3, "email", "error", "=cmd@example.com is also on line 2", "keep one row per address"],
                              [4, "name", "warning", "@SUM(1)", "-"]])

    rows = list(csv.reader(io.StringIO(imports.problems_csv(job))))

    assert rows == [["line", "column", "severity", "problem", "what to do"],
                    ["3", "email", "error", "'=cmd@example.com is also on line 2", "keep one row per address"],
                    ["4", "name", "warning", "'@SUM(1)", "'-"]]


def test_the_same_file_again_changes_nothing(world, editor):
    for _ in range(2):
        job_path = upload(editor, GOOD).headers["Location"]
        assert map_and_import(editor, job_path).status_code == 303
    first, second = jobs(world.settings)
    assert (first.added, second.added, second.unchanged, second.rejected) == (2, 0, 2, 2)


def test_consent_is_the_cli_importers(world, editor):
    with session_scope(world.settings) as session:
        add_subscriber(session, "left@example.org", lists=["everyone"], publication_slug="together-were-better")
        session.flush()
        session.scalars(select(Subscriber).where(Subscriber.email == "left@example.org")).one().status = "unsubscribed"
        add_suppression(session, "bounced@example.org", "hard bounce", "test")
    job_path = upload(editor, "email\nleft@example.org\nBOUNCED@example.org\nnew@example.org\n").headers["Location"]
    map_and_import(editor, job_path)
    [job] = jobs(world.settings)
    assert (job.added, job.not_resubscribed) == (1, 2)
    assert subscriber(world.settings, "left@example.org").status == "unsubscribed"
    assert subscriber(world.settings, "bounced@example.org") is None
    page = editor.get(job_path).get_data(as_text=True)
    assert "an import does not resubscribe" in page


@pytest.mark.parametrize("data, expected", [
    (b"", "the file is empty"),
    (b"email,name\n", "the file has column names but no rows under them"),
    ("email,name\nzoë@example.org,Zoë\n".encode("latin-1"), "people.csv:2: the file is not UTF-8 text"),
    (b"ada@example.org,Ada\nbob@example.org,Bob\n", "the first line holds an address (ada@example.org), not column names"),
    (b"email,Email\na@example.org,b@example.org\n", "columns named twice: email"),
    ("email\n".encode("utf-16"), "NUL characters"),
])
def test_a_file_that_cannot_be_imported_says_why_and_nothing_is_stored(world, editor, data, expected):
    response = upload(editor, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert expected in page.replace("&#39;", "'") and "Nothing was stored" in page
    assert jobs(world.settings) == []


@pytest.mark.parametrize("header, expected", [
    ("ada@example.org,Ada", "the first line holds an address (ada@example.org), not column names"),
    (" , ", "the first line names no columns"),
    ("Email,email", "columns named twice: email"),
    ("email," + "x" * 200_000, "cannot read the first line: field larger than field limit (131072)"),
])
def test_the_upload_and_the_cli_import_check_a_header_alike(world, tmp_path, header, expected):
    from newsletter.audience.csv_import import import_csv
    from newsletter.errors import InputError

    data = f"{header}\nbo@example.org,Bo\n".encode()
    path = tmp_path / "people.csv"
    path.write_bytes(data)

    with pytest.raises(InputError) as uploaded:
        imports.read_upload(data, "people.csv")
    with session_scope(world.settings) as session, pytest.raises(InputError) as imported:
        import_csv(session, path, ["everyone"])

    [by_upload], [by_import] = uploaded.value.problems, imported.value.problems
    assert (by_upload.where, by_upload.message) == ("people.csv:1", expected)
    assert (by_import.where, by_import.message) == (f"{path}:1", expected)
    # The advice is the same, in each way in's words: the CLI's file may name its lists.
    assert by_upload.fix and by_import.fix == by_upload.fix.replace("email,name", "email,name,lists").replace("upload", "import")


def test_a_file_over_the_limit_is_refused_before_it_is_read(world, editor, monkeypatch):
    import newsletter.web.console as console

    monkeypatch.setattr(console, "IMPORT_BYTES", 2000)
    response = upload(editor, "email\n" + "someone@example.org\n" * 200)
    assert response.status_code == 413
    assert "A CSV file can be at most" in response.get_data(as_text=True)
    assert jobs(world.settings) == []


def test_the_upload_page_states_the_size_limit(editor):
    page = editor.get("/console/imports/new").get_data(as_text=True)
    assert f"at most {imports.MAX_BYTES // 1024 // 1024} MB" in page


def test_a_mapping_without_an_email_column_or_with_two_is_refused_by_column(world, editor):
    job_path = upload(editor, GOOD).headers["Location"]
    response = map_and_import(editor, job_path, **{"target-0": "ignore"})
    assert response.status_code == 400 and "no column is the email address" in response.get_data(as_text=True)
    response = map_and_import(editor, job_path, **{"target-0": "email", "target-2": "email"})
    assert response.status_code == 400
    assert "column 3: columns 1, 3 are all Email address" in response.get_data(as_text=True)
    response = map_and_import(editor, job_path, **{"target-2": "field", "field-2": "lists"})
    assert "'lists' is a built-in column" in response.get_data(as_text=True).replace("&#39;", "'")
    [job] = jobs(world.settings)
    assert (job.state, job.added) == ("uploaded", 0) and job.data is not None
    assert subscriber(world.settings, "ada@example.org") is None


def test_a_large_file_waits_for_a_worker_and_the_page_follows_its_progress(world, editor, monkeypatch):
    monkeypatch.setattr(imports, "INLINE_ROWS", 3)
    rows = "".join(f"person{n}@example.org,Person {n}\n" for n in range(2500))
    job_path = upload(editor, "email,name\n" + rows + "broken\n").headers["Location"]
    map_and_import(editor, job_path)
    page = editor.get(job_path).get_data(as_text=True)
    assert '<progress id="import-bar" max="2501" value="0">' in page
    assert '<noscript><meta http-equiv="refresh"' in page and "import.js" in page
    assert editor.get(f"{job_path}/progress.json").get_json()["state"] == "waiting"

    seen = []

    with session_scope(world.settings) as session:
        [job_id] = imports.due_jobs(session)
        assert imports.due_jobs(session) == []  # handed over once
    assert editor.get(f"{job_path}/progress.json").get_json()["state"] == "queued"

    # The task a worker runs, watched from the web after each chunk it commits.
    real = imports.import_csv

    def watched(*args, progress, **kwargs):
        def told(done, good):
            progress(done, good)
            seen.append(editor.get(f"{job_path}/progress.json").get_json()["rows_done"])
        return real(*args, progress=told, **kwargs)

    monkeypatch.setattr(imports, "import_csv", watched)
    with session_scope(world.settings) as session:
        imports.run_job(session, job_id)
    assert seen == [1001, 2001, 2501]  # the rejected line, then a chunk of 1,000 at a time
    done = editor.get(f"{job_path}/progress.json").get_json()
    assert (done["state"], done["rows_done"], done["added"], done["rejected"]) == ("finished", 2501, 2500, 1)


def test_a_worker_imports_the_upload_from_its_row_without_writing_a_file(world, editor, monkeypatch):
    import tempfile

    monkeypatch.setattr(imports, "INLINE_ROWS", 0)
    job_path = upload(editor, "email\nx@example.org\n").headers["Location"]
    map_and_import(editor, job_path)

    def no_file(*args, **kwargs):
        raise AssertionError("a file was written")

    for name in ("NamedTemporaryFile", "TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_file)
    with session_scope(world.settings) as session:
        [job_id] = imports.due_jobs(session)
        imports.run_job(session, job_id)
    [job] = jobs(world.settings)
    assert (job.state, job.added, job.error) == ("finished", 1, "")


def test_a_job_whose_worker_was_lost_is_handed_out_again(world, editor, monkeypatch):
    from datetime import timedelta

    from newsletter.store.models import utcnow

    monkeypatch.setattr(imports, "INLINE_ROWS", 0)
    job_path = upload(editor, "email\nx@example.org\n").headers["Location"]
    map_and_import(editor, job_path)
    with session_scope(world.settings) as session:
        [job_id] = imports.due_jobs(session)
        assert imports.claim(session, job_id)  # a worker took it, then died
        assert imports.due_jobs(session) == []
        assert imports.due_jobs(session, now=utcnow() + imports.STALE + timedelta(seconds=1)) == [job_id]
        imports.run_job(session, job_id)
    assert subscriber(world.settings, "x@example.org") is not None


def test_a_job_running_on_a_worker_whose_clock_is_slow_is_not_handed_out_again(world, editor, monkeypatch):
    """Who holds a job is judged by the database's clock: a worker fifteen minutes
    slow (more than STALE) is not taken for lost while it works."""
    from datetime import timedelta

    import time_machine

    from newsletter.store import clock

    monkeypatch.setattr(imports, "INLINE_ROWS", 0)
    job_path = upload(editor, "email\nx@example.org\n").headers["Location"]
    map_and_import(editor, job_path)
    with session_scope(world.settings) as session:
        [job_id] = imports.due_jobs(session)
        slow = clock.read(session) - imports.STALE - timedelta(minutes=5)
    with time_machine.travel(slow, tick=True), session_scope(world.settings) as session:
        assert imports.claim(session, job_id)
    with session_scope(world.settings) as session:
        assert imports.due_jobs(session) == []  # it is still the slow worker's


def test_an_import_that_keeps_failing_unexpectedly_gives_up_after_a_few_tries_and_says_why(world, editor, monkeypatch):
    from datetime import timedelta

    from newsletter.store.models import utcnow

    monkeypatch.setattr(imports, "INLINE_ROWS", 0)
    job_path = upload(editor, "email\nx@example.org\n").headers["Location"]
    map_and_import(editor, job_path)

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(imports, "import_csv", broken)
    later = utcnow()
    for attempt in range(1, imports.TRIES + 1):
        with session_scope(world.settings) as session:
            [job_id] = imports.due_jobs(session, now=later)
            imports.run_job(session, job_id)
        later += imports.STALE + timedelta(seconds=1)
        if attempt < imports.TRIES:
            page = editor.get(job_path).get_data(as_text=True)
            assert f"try {attempt} of {imports.TRIES} failed with an unexpected error: RuntimeError: the disk is full" in page
            assert "tried again within ten minutes" in page

    with session_scope(world.settings) as session:
        assert imports.due_jobs(session, now=later) == []  # not handed out for ever
    [job] = jobs(world.settings)
    assert (job.state, job.tries, job.data) == ("failed", imports.TRIES, None)
    page = editor.get(job_path).get_data(as_text=True)
    assert "The import failed" in page
    assert "gave up after 3 tries: the last one failed with an unexpected error: RuntimeError: the disk is full" in page


def test_an_import_whose_worker_keeps_dying_gives_up(world, editor, monkeypatch):
    from datetime import timedelta

    from newsletter.store.models import utcnow

    monkeypatch.setattr(imports, "INLINE_ROWS", 0)
    job_path = upload(editor, "email\nx@example.org\n").headers["Location"]
    map_and_import(editor, job_path)
    later = utcnow()
    with session_scope(world.settings) as session:
        for _ in range(imports.TRIES):
            [job_id] = imports.due_jobs(session, now=later)
            assert imports.claim(session, job_id)  # a worker took it, then died
            later += imports.STALE + timedelta(seconds=1)
        assert imports.due_jobs(session, now=later) == []
    [job] = jobs(world.settings)
    assert job.state == "failed" and "each time its worker stopped before it finished" in job.error
    assert subscriber(world.settings, "x@example.org") is None


def test_an_address_the_publications_transport_can_never_deliver_is_rejected_with_the_reason(world):
    from dataclasses import replace

    client = create_app(replace(world.settings, transport="ses")).test_client()
    assert log_in(client, EDITOR).status_code == 303
    job_path = upload(client, "email,name\njörg@example.org,Jörg\njo@bücher.example,Jo\n").headers["Location"]
    map_and_import(client, job_path)  # a small file: imported while the page waits

    [job] = jobs(world.settings)
    assert (job.state, job.added, job.rejected) == ("finished", 1, 1)
    [(line, column, _severity, problem, fix)] = job.problems
    assert (line, column) == (2, "email") and "Amazon SES cannot send to such an address" in problem
    assert "SMTPUTF8" in fix
    assert subscriber(world.settings, "jörg@example.org") is None


def test_an_upload_never_mapped_is_deleted_after_a_day(world, editor):
    from datetime import timedelta

    from newsletter.store.models import utcnow

    upload(editor, GOOD)
    with session_scope(world.settings) as session:
        imports.due_jobs(session)
    assert len(jobs(world.settings)) == 1
    with session_scope(world.settings) as session:
        imports.due_jobs(session, now=utcnow() + imports.UPLOAD_KEPT + timedelta(seconds=1))
    assert jobs(world.settings) == []


def test_only_editors_import(world, app):
    approver = app.test_client()
    log_in(approver, APPROVER)
    assert approver.get("/console/imports/new").status_code == 403
    assert approver.get("/console/lists/everyone/export.csv").status_code == 403


def test_export_a_list_streams_csv_with_formulas_neutralised(world, editor):
    job_path = upload(editor, GOOD).headers["Location"]
    map_and_import(editor, job_path)
    response = editor.get("/console/lists/everyone/export.csv", buffered=False)
    assert response.is_streamed and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.response).decode())))
    response.close()
    assert rows[0] == ["email", "name", "lists", "notes", "organisation"]
    by_email = {row[0]: row for row in rows[1:]}
    assert len(by_email) == 4  # the world's two readers and the two imported
    assert by_email["grace@example.org"][1] == "'=HYPERLINK(\"http://evil.example\")"
    assert by_email["ada@example.org"][2:] == ["everyone", "first", "Analytical Engines"]
    assert editor.get("/console/lists/nobody/export.csv").status_code == 404
    assert ("downloaded as CSV", "list everyone") in audit_log(world.settings)
