"""The db, lists and subscribers commands, as an operator types them."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import get_settings
from newsletter.authoring.issue import Publication
from newsletter.store.publications import sync_publication
from newsletter.store.db import session_scope


@pytest.fixture
def run(monkeypatch, tmp_path, database_url):
    """Run ``newsletter ARGS...`` against this test's own database; returns the result."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that tables never cut an address
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()


@pytest.fixture
def publication(run, migrate):
    settings = get_settings()
    migrate(settings.effective_database_url)
    with session_scope(settings) as session:
        sync_publication(
            session,
            Publication(
                slug="together", name="Together", from_name="Together", from_email="news@example.org",
                reply_to="news@example.org", postal_address="1 Example Street", web_base_url="https://news.example.org/",
            ),
        )
    return "together"


@pytest.fixture
def monthly(run, publication):
    result = run("lists", "create", "monthly", "--name", "Monthly newsletter")
    assert result.exit_code == 0, result.output
    return "monthly"


def test_db_upgrade_on_a_fresh_install_then_again(run):
    first = run("db", "upgrade")
    second = run("db", "upgrade")

    assert first.exit_code == second.exit_code == 0
    assert "database schema at revision" in second.output


def test_creating_a_list_before_any_publication_says_how_one_appears(run):
    result = run("lists", "create", "monthly", "--name", "Monthly")

    assert result.exit_code == 2
    assert "no publications yet" in result.stderr
    assert "Traceback" not in result.output


def test_lists_create_list_and_remove(run, monthly):
    listed = run("lists", "list")
    assert "monthly" in listed.stdout and "Monthly newsletter" in listed.stdout

    removed = run("lists", "remove", "monthly", "--yes")
    assert removed.exit_code == 0
    assert "no lists yet" in run("lists", "list").stdout


def test_removing_a_list_asks_first(run, monthly):
    result = run("lists", "remove", "monthly", input="n\n")

    assert result.exit_code == 1  # aborted
    assert "monthly" in run("lists", "list").stdout


def test_subscribers_add_search_unsubscribe_and_remove(run, monthly):
    added = run("subscribers", "add", "Reader.One@EXAMPLE.com", "--name", "Reader 1", "--list", "monthly",
                "--attribute", "team=Finance")
    assert added.exit_code == 0, added.output
    assert "Reader.One@example.com" in added.stdout

    found = run("subscribers", "search", "reader.one")
    assert "Reader.One@example.com" in found.stdout and "monthly (confirmed)" in found.stdout

    run("subscribers", "unsubscribe", "Reader.One@example.com")
    listed = run("subscribers", "list", "--list", "monthly", "--status", "unsubscribed")
    assert "Reader.One@example.com" in listed.stdout

    removed = run("subscribers", "remove", "Reader.One@example.com", "--yes")
    assert removed.exit_code == 0
    assert "no subscribers match" in run("subscribers", "list").stdout


def test_user_mistakes_are_reported_without_a_traceback(run, monthly):
    bad_address = run("subscribers", "add", "reader.example.com", "--list", "monthly")
    unknown_list = run("subscribers", "add", "reader@example.com", "--list", "weekly")
    bad_attribute = run("subscribers", "add", "reader@example.com", "--attribute", "team")

    assert bad_address.exit_code == unknown_list.exit_code == bad_attribute.exit_code == 2
    assert "not an email address" in bad_address.stderr
    assert "no list 'weekly'" in unknown_list.stderr and "newsletter lists list" in unknown_list.stderr
    assert "is not KEY=VALUE" in bad_attribute.stderr


def test_adding_an_address_the_transport_can_never_deliver_is_refused_with_the_reason(run, monthly, monkeypatch):
    monkeypatch.setenv("TRANSPORT", "ses")  # no SMTPUTF8: a local part beyond ASCII cannot go
    get_settings.cache_clear()

    refused = run("subscribers", "add", "jörg@example.org", "--list", "monthly")
    idn_domain = run("subscribers", "add", "jo@bücher.example", "--list", "monthly")

    assert refused.exit_code == 2
    assert "jörg@example.org has letters beyond ASCII before the @, and Amazon SES cannot send" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert idn_domain.exit_code == 0, idn_domain.output  # a domain beyond ASCII goes in its IDNA form
    listed = run("subscribers", "list").stdout
    assert "jo@bücher.example" in listed and "jörg" not in listed


def test_list_pages_with_after(run, monthly):
    for n in range(3):
        run("subscribers", "add", f"reader{n}@example.com", "--list", "monthly")

    first = run("subscribers", "list", "--limit", "2")
    assert "reader0@" in first.stdout and "reader2@" not in first.stdout
    after = first.stdout.split("--after ")[1].split()[0]
    second = run("subscribers", "list", "--limit", "2", "--after", after)
    assert "reader2@" in second.stdout and "reader0@" not in second.stdout


def test_import_reports_rejected_rows_and_export_writes_the_rest(run, monthly, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text("email,name,team\none@example.com,Reader 1,Ops\nnot-an-address,Reader 2,\n", encoding="utf-8")

    imported = run("subscribers", "import", str(source), "--list", "monthly")

    assert imported.exit_code == 1  # some rows were rejected
    assert f"{source}:3" in imported.stderr and "not an email address" in imported.stderr
    assert "1" in imported.stdout.split("rejected")[-1]

    again = run("subscribers", "import", str(source), "--list", "monthly")
    assert f"{source}:3" in again.stderr

    exported = tmp_path / "export.csv"
    assert run("subscribers", "export", str(exported)).exit_code == 0
    assert list(csv.DictReader(exported.open(encoding="utf-8"))) == [
        {"email": "one@example.com", "name": "Reader 1", "lists": "monthly", "team": "Ops"}
    ]
    to_stdout = run("subscribers", "export", "-", "--list", "monthly")
    assert to_stdout.stdout.splitlines()[1] == "one@example.com,Reader 1,monthly,Ops"


def test_import_of_a_file_without_an_email_column_names_the_file(run, monthly, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text("name\nReader 1\n", encoding="utf-8")

    result = run("subscribers", "import", str(source), "--list", "monthly")

    assert result.exit_code == 2
    assert f"{source}:1" in result.stderr and "no email column" in result.stderr
    assert "no subscribers match" in run("subscribers", "list").stdout


def test_import_shows_fifty_problems_and_says_how_to_get_them_all(run, monthly, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text("email,name\n" + "".join(f"bad{n}.example.com,Reader {n}\n" for n in range(70)), encoding="utf-8")

    result = run("subscribers", "import", str(source), "--list", "monthly")

    assert result.exit_code == 1
    assert f"{source}:51:" in result.stderr and f"{source}:52:" not in result.stderr
    assert "20 more" in result.stderr and "--errors FILE" in result.stderr


def test_import_writes_every_problem_to_the_errors_file_and_summarises(run, monthly, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text(
        "email,name\ngood@example.com,Good\n" + "".join(f"bad{n}.example.com,Reader {n}\n" for n in range(70))
        + 'open@example.com,"Never closed\nafter@example.com,After\n', encoding="utf-8",
    )
    errors = tmp_path / "out" / "problems.csv"
    errors.parent.mkdir()

    result = run("subscribers", "import", str(source), "--list", "monthly", "--errors", str(errors))

    assert result.exit_code == 1
    assert "71 rows rejected and 0 warnings" in result.stderr and str(errors) in result.stderr
    assert result.stderr.count(f"{source}:") == 5  # a taste; the file has them all
    written = list(csv.DictReader(errors.open(encoding="utf-8")))
    assert [row["line"] for row in written] == [str(n) for n in range(3, 74)]
    assert written[0]["column"] == "email" and "not an email address" in written[0]["problem"]
    assert written[-1]["column"] == "name" and "never closed" in written[-1]["problem"]
    listed = run("subscribers", "list").stdout
    assert "good@example.com" in listed and "after@example.com" in listed


def test_the_errors_file_may_not_be_the_file_imported(run, monthly, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text("email\nnot-an-address\n", encoding="utf-8")

    result = run("subscribers", "import", str(source), "--list", "monthly", "--errors", str(source))

    assert result.exit_code == 2 and "--errors" in result.stderr
    assert source.read_text(encoding="utf-8") == "email\nnot-an-address\n"


def test_suppressions_import_takes_the_good_rows_and_names_the_bad_ones(run, tmp_path, migrate):
    migrate(get_settings().effective_database_url)
    path = tmp_path / "from-the-old-provider.csv"
    path.write_text("email,reason\ngone@example.org,cleaned\nbroken,manual\nangry@example.org,spam report\n")
    errors = tmp_path / "problems.csv"

    result = run("suppressions", "import", str(path), "--errors", str(errors))
    assert result.exit_code == 1  # a row was rejected
    assert "from-the-old-provider.csv:3" in result.output and "'broken' is not an email address" in result.output
    assert "│ 2              │ 0                  │ 1        │" in result.output
    with errors.open(newline="") as handle:
        assert [row["line"] for row in csv.DictReader(handle)] == ["3"]
    listed = run("suppressions", "list").output
    assert "gone@example.org" in listed and "hard_bounce" in listed and "complaint" in listed

    again = run("suppressions", "import", str(path))
    assert "│ 0              │ 2                  │ 1        │" in again.output
