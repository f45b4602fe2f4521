"""build_issue and the check/build commands, on the sample issue and broken copies of it."""

from __future__ import annotations

import email
import shutil
from email import policy

import pytest
from click.testing import CliRunner

from newsletter.authoring.build import build_issue
from newsletter.cli import main
from newsletter.errors import InputError
from tests.conftest import SAMPLE_ISSUE

PUBLICATION = SAMPLE_ISSUE.parent.parent


@pytest.fixture
def publication(tmp_path):
    """A copy of the sample publication that a test may change."""
    copy = tmp_path / "together-were-better"
    shutil.copytree(PUBLICATION, copy)
    return copy


def break_issue(issue_folder):
    """Make the first section link to an insecure address."""
    chair = issue_folder / "01-chair.md"
    chair.write_text(chair.read_text() + "\nSee [our old site](http://example.org/old).\n")


def test_build_writes_the_email_the_sample_message_and_the_web_copy(tmp_path):
    out = tmp_path / "out"
    result = build_issue(SAMPLE_ISSUE, out)
    for name in ("email.mjml", "email.html", "email.txt", "sample.eml"):
        assert (out / name).is_file(), name
    site = out / "web" / "together-were-better"
    assert (site / "2021-09" / "index.html").is_file()
    assert (site / "2021-09" / "images" / "vaccinations.png").is_file()
    assert (site / "feed.xml").is_file()
    assert result.files["web copy"] == site / "2021-09" / "index.html"
    assert [p for p in result.warnings if p.is_error] == []


def test_the_sample_message_is_personal_and_complete(tmp_path):
    build_issue(SAMPLE_ISSUE, tmp_path / "out")
    message = email.message_from_bytes((tmp_path / "out" / "sample.eml").read_bytes(), policy=policy.default)
    assert message["To"] == "Sample Reader <reader@example.com>"
    assert message["Subject"] == "Together We're Better: September 2021"
    assert message["List-Unsubscribe"].startswith("<https://")
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "%%" not in html and "%%" not in text
    assert "https://news.example.org/together-were-better/2021-09/" in text


def test_a_failed_build_leaves_the_previous_output_intact(tmp_path, publication):
    out = tmp_path / "out"
    issue_folder = publication / "issues" / "2021-09"
    build_issue(issue_folder, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    break_issue(issue_folder)
    with pytest.raises(InputError) as caught:
        build_issue(issue_folder, out)
    assert any("http://example.org/old" in p.message and p.where.startswith(str(issue_folder / "01-chair.md:"))
               for p in caught.value.problems)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "together-were-better"]  # no leftovers


def test_the_archive_covers_every_issue_of_the_publication_that_loads(tmp_path, publication):
    issues = publication / "issues"
    october = issues / "2021-10"
    shutil.copytree(issues / "2021-09", october)
    manifest = october / "issue.yaml"
    manifest.write_text(manifest.read_text().replace("date: 2021-09-01", "date: 2021-10-01")
                        .replace("title: Together We're Better Monthly Newsletter", "title: October news"))
    draft = issues / "2021-11"
    shutil.copytree(issues / "2021-09", draft)
    (draft / "issue.yaml").write_text("title: [unfinished\n")
    result = build_issue(issues / "2021-09", tmp_path / "out")
    archive = (tmp_path / "out" / "web" / "together-were-better" / "index.html").read_text()
    assert archive.index("October news") < archive.index("Together We&#39;re Better Monthly Newsletter")
    assert (tmp_path / "out" / "web" / "together-were-better" / "2021-10" / "index.html").is_file()
    assert [(p.where, p.severity) for p in result.warnings] == [(str(draft), "warning")]


def test_check_command_on_the_sample_issue_passes():
    result = CliRunner().invoke(main, ["check", str(SAMPLE_ISSUE)])
    assert result.exit_code == 0, result.output
    assert "No errors" in result.output


def test_check_command_exits_non_zero_and_says_where(publication):
    issue_folder = publication / "issues" / "2021-09"
    break_issue(issue_folder)
    result = CliRunner().invoke(main, ["check", str(issue_folder)])
    assert result.exit_code == 1
    assert f"{issue_folder / '01-chair.md'}:" in result.output
    assert "http://example.org/old is not secure (http)" in result.output
    assert "use the https:// address" in result.output


def test_check_command_on_a_folder_that_is_not_an_issue(tmp_path):
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_build_command_says_where_everything_went(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", str(SAMPLE_ISSUE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Built \"Together We're Better Monthly Newsletter\" into {out}" in result.output
    assert str(out / "sample.eml") in result.output
    assert str(out / "web" / "together-were-better" / "2021-09" / "index.html") in result.output
