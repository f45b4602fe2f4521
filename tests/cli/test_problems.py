"""What an editor sees when an issue has problems: one format, one set of exit codes,
every problem in one pass in file and line order, each at the right file and line.

The same header rule refuses a line break in a subject or a sender's name in
`check`, `build`, `schedule` and in every message a send builds.
"""

from __future__ import annotations

import re
import shutil

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.authoring.content import load_issue
from newsletter.errors import ContentError, InputError
from newsletter.authoring.message import publication_template
from tests.conftest import SAMPLE_ISSUE

PUBLICATION = SAMPLE_ISSUE.parent.parent
# FILE:LINE: error: message (fix), the one format of every problem.
PROBLEM_LINE = re.compile(r"^(?P<where>\S+?):(?P<line>\d+): (?P<severity>error|warning): (?P<message>.+)$")


@pytest.fixture
def issue_folder(tmp_path):
    """A copy of the sample issue (with its publication) that a test may change."""
    shutil.copytree(PUBLICATION, tmp_path / "together-were-better")
    return tmp_path / "together-were-better" / "issues" / "2021-09"


def edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def append(path, text):
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def problem_lines(stderr: str) -> list[tuple[str, int, str]]:
    found = [PROBLEM_LINE.match(line) for line in stderr.splitlines() if line.strip()]
    assert all(found), f"a line that is not FILE:LINE: severity: message in:\n{stderr}"
    return [(m["where"].rsplit("/", 1)[-1], int(m["line"]), m["severity"]) for m in found]


def test_a_raw_picture_without_alt_is_reported_at_its_own_file_and_line(issue_folder):
    # "x" also occurs in 01-chair.md ("example", line 28): the place is the tag, not the first match.
    nhs = issue_folder / "06-nhs-111.md"
    edit(nhs, "or download the NHS App.", 'or download the NHS App. <img src="x">')
    assert '<img src="x">' in nhs.read_text().splitlines()[7], "line 8"
    result = run("check", issue_folder)
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("06-nhs-111.md", 8, "error")] * 2
    assert "a picture (x) has no alt attribute" in result.stderr
    assert "picture x is relative" in result.stderr


def test_a_link_is_reported_where_it_was_written_not_where_a_longer_one_contains_it(issue_folder):
    # 06-nhs-111.md links to https://111.nhs.uk/; an http link that is the start of it is elsewhere.
    append(issue_folder / "07-news.md", "\nSee [111](http://111.nhs.uk).\n")
    edit(issue_folder / "06-nhs-111.md", "[www.111.nhs.uk](https://111.nhs.uk/)", "[www.111.nhs.uk](http://111.nhs.uk/)")
    result = run("check", issue_folder)
    assert result.exit_code == 1
    places = problem_lines(result.stderr)
    assert ("06-nhs-111.md", 8, "error") in places
    assert [p for p in places if p[0] == "07-news.md"], result.stderr
    assert not [p for p in places if p[0] == "01-chair.md"]


def test_check_dot_inside_the_issue_folder(issue_folder, monkeypatch):
    monkeypatch.chdir(issue_folder)
    result = run("check", ".")
    assert result.exit_code == 0, result.output
    assert "No errors" in result.stdout
    assert "cannot be used in web addresses" not in result.output


def test_build_dot_inside_the_issue_folder(issue_folder, monkeypatch, tmp_path):
    monkeypatch.chdir(issue_folder)
    result = run("build", ".", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "web" / "together-were-better" / "2021-09" / "index.html").is_file()


def test_loader_and_check_problems_share_one_format_exit_code_and_order(issue_folder):
    # A check problem (an http link) in one file ...
    append(issue_folder / "07-news.md", "\nSee [us](http://example.org/a).\n")
    checked = run("check", issue_folder)
    # ... and loader problems (two YAML errors, a bad date) in others.
    edit(issue_folder / "issue.yaml", "date: 2021-09-01", "date: 2021-09-31")
    edit(issue_folder / "03-transforming-services.md", "kind:", "title: Transforming: services\nkind:")
    edit(issue_folder / "02-priorities.md", "kind:", "title: Our: priorities\nkind:")
    loaded = run("check", issue_folder)
    for result in (checked, loaded):
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        assert problem_lines(result.stderr), result.output
    assert [p[:2] for p in problem_lines(checked.stderr)][0][0] == "07-news.md"
    places = problem_lines(loaded.stderr)
    assert places == sorted(places), "sorted by file and line"
    assert [p[0] for p in places] == ["02-priorities.md", "03-transforming-services.md", "issue.yaml"]


def test_build_refuses_with_the_check_exit_code(issue_folder, tmp_path):
    append(issue_folder / "07-news.md", "\nSee [us](http://example.org/a).\n")
    result = run("build", issue_folder, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert [p[0] for p in problem_lines(result.stderr)] == ["07-news.md"]
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_an_issue_is_a_usage_error(tmp_path):
    result = run("check", tmp_path)
    assert result.exit_code == 2
    assert "there is no issue.yaml in this folder" in result.stderr


@pytest.mark.parametrize("command", ["check", "build", "preview", "schedule", "proof"])
def test_help_documents_the_format_and_the_exit_codes(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "FILE:LINE: error:" in text
    assert "0 no errors" in text and "1 the issue or its publication has errors" in text
    assert "2 the command could not run" in text


def test_a_subject_that_is_too_long_names_its_line(issue_folder):
    edit(issue_folder / "issue.yaml", "subject: \"Together We're Better: September 2021\"", "subject: " + "Long news " * 16)
    result = run("check", issue_folder)
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("issue.yaml", 3, "error")]
    assert "the subject is 159 characters" in result.stderr


def test_a_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(issue_folder):
    nhs = issue_folder / "06-nhs-111.md"
    nhs.write_bytes(nhs.read_bytes().replace(b"NHS App", b"NHS \xe9 App", 1))
    result = run("check", issue_folder)
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("06-nhs-111.md", 8, "error")]
    assert "not UTF-8" in result.stderr and "0xe9" in result.stderr


# --- one rule for what may go into a header -------------------------------------------

LINE_BREAKS = [
    pytest.param("Hello\\r\\nBcc: someone@example.net", id="CRLF"),
    pytest.param("Hello\\nBcc: someone@example.net", id="LF"),
    pytest.param("Hello\\u2028Bcc: someone@example.net", id="line-separator"),
    pytest.param("Hello\\x00there", id="NUL"),
    pytest.param("Hello =?utf-8?q?there=0D=0ABcc=3A_someone=40example=2Enet?=", id="encoded-word"),
]


@pytest.mark.parametrize("subject", LINE_BREAKS)
def test_a_subject_that_could_add_a_header_is_refused_at_its_line(issue_folder, subject):
    edit(issue_folder / "issue.yaml", "subject: \"Together We're Better: September 2021\"", f'subject: "{subject}"')
    with pytest.raises(ContentError) as caught:
        load_issue(issue_folder)
    [problem] = caught.value.problems
    assert problem.where.endswith("issue.yaml:3")
    assert "`subject` contains a line break or control character" in problem.message
    # The message a send would build refuses the same subject by the same rule.
    decoded = subject.encode().decode("unicode_escape")
    good = load_issue(SAMPLE_ISSUE).publication
    with pytest.raises(InputError) as at_send:
        publication_template(good, subject=decoded, html="<p>x</p>", text="x")
    assert at_send.value.problems[0].message == "contains a line break or control character"


@pytest.mark.parametrize("field, line", [("name", 4), ("from_name", 5)])
def test_a_sender_name_that_could_add_a_header_is_refused_at_its_line(issue_folder, field, line):
    edit(issue_folder.parent.parent / "publication.yaml", f"\n{field}: Together We're Better\n",
         f'\n{field}: "Together\\r\\nBcc: someone@example.net"\n')
    result = run("check", issue_folder)
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("publication.yaml", line, "error")]
    assert f"`{field}` contains a line break" in result.stderr


def test_a_reply_to_the_send_could_not_use_is_refused_at_its_line(issue_folder):
    # Valid as an internationalised address, but no header we write can carry it.
    edit(issue_folder.parent.parent / "publication.yaml", "reply_to: communications@example.org",
         "reply_to: communicatións@example.org")
    result = run("check", issue_folder)
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("publication.yaml", 7, "error")]
    assert "`reply_to` is not an address we can send to" in result.stderr


def test_schedule_refuses_a_subject_with_a_line_break_and_stores_nothing(cli, issue_folder):
    from tests.cli.stored import count
    from newsletter.store.models import IssueRow, Send

    assert cli("publications", "add", issue_folder.parent.parent).exit_code == 0
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    edit(issue_folder / "issue.yaml", "subject: \"Together We're Better: September 2021\"",
         'subject: "Hello\\r\\nBcc: someone@example.net"')
    result = cli("schedule", issue_folder, "--list", "staff", "--now")
    assert result.exit_code == 1
    assert problem_lines(result.stderr) == [("issue.yaml", 3, "error")]
    assert count(Send) == 0 and count(IssueRow) == 0


# --- what the commands confirm -----------------------------------------------------------


def test_schedule_with_seconds_confirms_the_time_that_was_stored(cli, issue_folder):
    from datetime import datetime, timezone

    from sqlalchemy import select

    from newsletter.config import get_settings
    from newsletter.store.db import session_scope
    from newsletter.store.models import Send

    assert cli("publications", "add", issue_folder.parent.parent).exit_code == 0
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    result = cli("schedule", issue_folder, "--list", "staff", "--at", "2099-07-01 09:30:15")
    assert result.exit_code == 0, result.output
    assert "09:30:15 BST" in result.stdout and "(2099-07-01 08:30:15 UTC)" in result.stdout
    with session_scope(get_settings()) as session:
        stored = session.scalars(select(Send.scheduled_at)).one()
    assert stored.replace(tzinfo=stored.tzinfo or timezone.utc) == datetime(2099, 7, 1, 8, 30, 15, tzinfo=timezone.utc)
    on_the_minute = cli("sends", "reschedule", "1", "--at", "2099-07-01 10:00")
    assert "10:00 BST (2099-07-01 09:00 UTC)" in on_the_minute.stdout


def test_publications_list_never_cuts_a_slug(cli, issue_folder, monkeypatch):
    slug = "together-were-better-staffordshire-and-stoke-on-trent-partnership"
    publication = issue_folder.parent.parent / "publication.yaml"
    edit(publication, "slug: together-were-better", f"slug: {slug}")
    edit(publication, "web_base_url: https://news.example.org/together-were-better/",
         "web_base_url: https://news.example.org/together-were-better-staffordshire-and-stoke-on-trent/")
    assert cli("publications", "add", publication).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("publications", "list")
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert slug in result.stdout


def test_a_list_name_that_could_add_a_header_is_refused(cli, issue_folder):
    assert cli("publications", "add", issue_folder.parent.parent).exit_code == 0
    result = cli("lists", "create", "staff", "--name", "Staff\r\nBcc: someone@example.net")
    assert result.exit_code == 2
    assert "list name: error: contains a line break or control character" in result.stderr


def test_schedule_refuses_what_the_send_would_refuse_and_stores_nothing(cli, issue_folder):
    """A list stored before names were checked: schedule builds the send's headers as the workers would."""
    from sqlalchemy import update

    from newsletter.config import get_settings
    from newsletter.store.db import session_scope
    from newsletter.store.models import IssueRow, MailingList, Send
    from tests.cli.stored import count

    assert cli("publications", "add", issue_folder.parent.parent).exit_code == 0
    assert cli("lists", "create", "staff", "--name", "Staff").exit_code == 0
    with session_scope(get_settings()) as session:
        session.execute(update(MailingList).values(name="Staff\r\nBcc: someone@example.net"))
    result = cli("schedule", issue_folder, "--list", "staff", "--now")
    assert result.exit_code == 2
    assert "list staff: field list_id: error: contains a line break or control character" in result.stderr
    assert count(Send) == 0 and count(IssueRow) == 0
