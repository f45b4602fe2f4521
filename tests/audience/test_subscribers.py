"""Lists and subscribers, on SQLite and PostgreSQL (the ``session`` fixture runs both)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from newsletter.audience import csv_export, csv_import
from newsletter.audience import subscribers as subs
from newsletter.errors import InputError, NotFound
from newsletter.authoring.issue import Colours
from newsletter.store.publications import get_publication, sync_publication
from newsletter.store.models import IssueRow, Membership, Send, Subscriber, Suppression
from tests.audience.lists import memberships, publication, write_csv


# -- publications ------------------------------------------------------------


def test_sync_publication_updates_the_row_with_the_same_slug(session):
    first = sync_publication(session, publication())
    second = sync_publication(session, publication(name="Renamed", colours=Colours(primary="#112233")))

    assert second.id == first.id
    row = get_publication(session, "together")
    assert row.name == "Renamed"
    assert row.settings["colours"]["primary"] == "#112233"
    assert row.settings["why_receiving"].startswith("You receive this")


def test_an_unknown_publication_names_the_ones_that_exist(session):
    sync_publication(session, publication())
    with pytest.raises(NotFound, match="known publications: together"):
        get_publication(session, "elsewhere")


# -- lists -------------------------------------------------------------------


def test_lists_are_created_counted_and_removed(session, monthly):
    subs.add_subscriber(session, "reader@example.com", lists=["monthly"])

    summaries = {s.slug: s for s in subs.list_lists(session)}
    assert summaries["monthly"].confirmed == 1
    assert summaries["staff"].confirmed == 0

    subs.remove_list(session, "together", "staff")
    assert [s.slug for s in subs.list_lists(session)] == ["monthly"]


def test_an_unknown_list_says_how_to_see_the_lists(session, monthly):
    with pytest.raises(NotFound, match=r"no list 'weekly'.*newsletter lists list"):
        subs.get_list(session, None, "weekly")


def test_a_list_slug_must_be_simple_and_unique(session, monthly):
    with pytest.raises(InputError, match="lower-case letters"):
        subs.create_list(session, "together", "Monthly News", "x")
    with pytest.raises(InputError, match="already has a list 'monthly'"):
        subs.create_list(session, "together", "monthly", "Again")


def test_a_list_that_was_sent_to_cannot_be_removed(session, monthly):
    mailing_list = subs.get_list(session, "together", "monthly")
    issue = IssueRow(
        publication_id=mailing_list.publication_id, slug="2021-09", title="t", subject="s",
        issue_date=datetime(2021, 9, 1).date(), html="", text="", content_hash="0" * 64,
    )
    session.add(issue)
    session.flush()
    session.add(Send(issue_id=issue.id, list_id=mailing_list.id, scheduled_at=datetime.now(timezone.utc)))
    session.flush()

    with pytest.raises(InputError, match=r"used by send \d+ \(scheduled\)"):
        subs.remove_list(session, "together", "monthly")


# -- subscribers -------------------------------------------------------------


def test_add_search_and_remove(session, monthly):
    added = subs.add_subscriber(session, "Ada.Reader@EXAMPLE.COM", "Reader One", ["monthly"], {"team": "Finance"})

    assert added.email == "Ada.Reader@example.com"  # the domain is lower-cased, the local part kept
    assert [s.email for s in subs.find_subscribers(session, "ada.reader")] == ["Ada.Reader@example.com"]
    assert [s.name for s in subs.find_subscribers(session, "one", list="monthly")] == ["Reader One"]
    assert subs.find_subscribers(session, "nobody") == []

    subs.remove_subscriber(session, "Ada.Reader@Example.Com", "monthly")
    assert memberships(session, "Ada.Reader@example.com") == {}
    subs.remove_subscriber(session, "Ada.Reader@example.com")
    with pytest.raises(NotFound):
        subs.get_subscriber(session, "Ada.Reader@example.com")


def test_adding_the_same_address_with_another_domain_case_updates_one_person(session, monthly):
    subs.add_subscriber(session, "reader@example.com", "Reader", ["monthly"])
    subs.add_subscriber(session, "reader@EXAMPLE.com", "", ["staff"], {"team": "Ops"})

    people = session.scalars(select(Subscriber)).all()
    assert len(people) == 1
    assert people[0].name == "Reader"
    assert people[0].attributes == {"team": "Ops"}
    assert memberships(session, "reader@example.com") == {"monthly": "confirmed", "staff": "confirmed"}


def test_a_bad_address_is_an_input_error(session, monthly):
    with pytest.raises(InputError, match="not an email address"):
        subs.add_subscriber(session, "reader.example.com", lists=["monthly"])


def test_find_pages_by_id(session, monthly):
    for n in range(5):
        subs.add_subscriber(session, f"reader{n}@example.com", lists=["monthly"])

    first = subs.find_subscribers(session, list="monthly", limit=2)
    second = subs.find_subscribers(session, list="monthly", limit=2, after_id=first[-1].id)
    third = subs.find_subscribers(session, list="monthly", limit=2, after_id=second[-1].id)

    emails = [s.email for s in first + second + third]
    assert emails == [f"reader{n}@example.com" for n in range(5)]


def test_search_treats_wildcards_as_text(session, monthly):
    subs.add_subscriber(session, "reader_1@example.com", lists=["monthly"])
    subs.add_subscriber(session, "readerx1@example.com", lists=["monthly"])

    assert [s.email for s in subs.find_subscribers(session, "r_1")] == ["reader_1@example.com"]


def test_unsubscribe_from_one_list_and_from_everything(session, monthly):
    subs.add_subscriber(session, "reader@example.com", lists=["monthly", "staff"])

    subs.unsubscribe(session, "reader@example.com", "staff")
    assert memberships(session, "reader@example.com") == {"monthly": "confirmed", "staff": "unsubscribed"}

    subs.unsubscribe(session, "reader@example.com")
    assert subs.get_subscriber(session, "reader@example.com").status == "unsubscribed"
    assert memberships(session, "reader@example.com") == {"monthly": "unsubscribed", "staff": "unsubscribed"}
    assert subs.find_subscribers(session, status="active") == []


def test_adding_someone_who_unsubscribed_or_is_suppressed_is_refused(session, monthly):
    subs.add_subscriber(session, "left@example.com", lists=["monthly"])
    subs.unsubscribe(session, "left@example.com")
    session.add(Suppression(email="bounced@example.com", reason="hard_bounce"))
    session.flush()

    with pytest.raises(InputError, match="has unsubscribed"):
        subs.add_subscriber(session, "left@example.com", lists=["monthly"])
    with pytest.raises(InputError, match="suppression list"):
        subs.add_subscriber(session, "bounced@example.com", lists=["monthly"])


# -- CSV import --------------------------------------------------------------

GOOD_AND_BROKEN = """email,name,lists,team
one@example.com,Reader 1,,Finance
not-an-address,Reader 2,,
,Reader 3,,
two@Example.com,Reader 4,staff,
three@example.com,Reader 5,weekly,
TWO@example.com,Reader 6,,
"""


def test_import_reports_each_broken_row_by_line_and_keeps_the_good_ones(session, monthly, tmp_path):
    path = write_csv(tmp_path, GOOD_AND_BROKEN)

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (2, 4)
    rejected = {p.where: p.message for p in report.problems}
    assert "not an email address" in rejected[f"{path}:3"]
    assert rejected[f"{path}:4"] == "no email address"
    assert rejected[f"{path}:6"] == "unknown list 'weekly'"
    # TWO@ is the same person as two@: one subscriber, whatever the case of the letters.
    assert rejected[f"{path}:7"] == "TWO@example.com is also on line 5"
    assert memberships(session, "two@example.com") == {"monthly": "confirmed", "staff": "confirmed"}
    assert subs.get_subscriber(session, "one@example.com").attributes == {"team": "Finance"}


def test_a_repeated_address_in_the_file_is_rejected_with_the_first_line(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email\none@example.com\nother@example.com\none@EXAMPLE.COM\n")

    report = csv_import.import_csv(session, path, ["monthly"])

    assert report.added == 2
    assert [(p.where, p.message) for p in report.problems] == [(f"{path}:4", "one@example.com is also on line 2")]


def test_importing_the_same_file_again_changes_nothing(session, monthly, tmp_path):
    path = write_csv(tmp_path, GOOD_AND_BROKEN)
    csv_import.import_csv(session, path, ["monthly"])
    before = session.execute(select(Subscriber.email, Subscriber.name, Subscriber.updated_at)).all()

    again = csv_import.import_csv(session, path, ["monthly"])

    assert (again.added, again.updated, again.unchanged, again.rejected) == (0, 0, 2, 4)
    assert session.execute(select(Subscriber.email, Subscriber.name, Subscriber.updated_at)).all() == before


def test_a_changed_file_updates_names_attributes_and_lists(session, monthly, tmp_path):
    csv_import.import_csv(session, write_csv(tmp_path, "email,name,team\none@example.com,Reader 1,Finance\n"), ["monthly"])

    report = csv_import.import_csv(
        session, write_csv(tmp_path, "email,name,lists,site\none@example.com,,staff,North\n", "changed.csv"), ["monthly"]
    )

    assert report.updated == 1
    person = subs.get_subscriber(session, "one@example.com")
    assert person.name == "Reader 1"  # an empty cell keeps what was there
    assert person.attributes == {"team": "Finance", "site": "North"}
    assert memberships(session, "one@example.com") == {"monthly": "confirmed", "staff": "confirmed"}


def test_import_does_not_resubscribe_the_unsubscribed_or_suppressed(session, monthly, tmp_path):
    subs.add_subscriber(session, "left@example.com", lists=["monthly"])
    subs.unsubscribe(session, "left@example.com")
    subs.add_subscriber(session, "left-staff@example.com", lists=["staff", "monthly"])
    subs.unsubscribe(session, "left-staff@example.com", "staff")
    session.add(Suppression(email="bounced@example.com", reason="hard_bounce"))
    session.flush()
    path = write_csv(tmp_path, "email,lists\nleft@example.com,\nbounced@example.com,\nleft-staff@example.com,staff\n")

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.not_resubscribed) == (0, 3)
    warnings = [str(p) for p in report.problems]
    assert any(":2:" in w and "has unsubscribed" in w for w in warnings)
    assert any(":3:" in w and "suppression list" in w for w in warnings)
    assert any(":4:" in w and "left 1 of these lists" in w for w in warnings)
    assert memberships(session, "left@example.com") == {"monthly": "unsubscribed"}
    assert memberships(session, "left-staff@example.com")["staff"] == "unsubscribed"
    assert session.scalar(select(Subscriber.id).where(Subscriber.email == "bounced@example.com")) is None


def test_import_confirms_but_never_unconfirms(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email\none@example.com\n")
    csv_import.import_csv(session, path, ["monthly"], status="unconfirmed")
    assert memberships(session, "one@example.com") == {"monthly": "unconfirmed"}

    assert csv_import.import_csv(session, path, ["monthly"], status="confirmed").updated == 1
    assert csv_import.import_csv(session, path, ["monthly"], status="unconfirmed").unchanged == 1
    assert memberships(session, "one@example.com") == {"monthly": "confirmed"}


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"name,lists\nReader,monthly\n", "no email column"),
        (b"", "the file is empty"),
        ("email,name\nr@example.com,Ren\xe9e\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_imported_is_an_input_error_naming_it(session, monthly, tmp_path, content, expected):
    path = tmp_path / "people.csv"
    path.write_bytes(content)

    with pytest.raises(InputError, match=expected) as raised:
        csv_import.import_csv(session, path, ["monthly"])

    assert str(path) in raised.value.problems[0].where
    assert session.scalars(select(Subscriber)).all() == []


def test_a_missing_file_is_an_input_error(session, monthly, tmp_path):
    with pytest.raises(InputError, match="cannot read the file"):
        csv_import.import_csv(session, tmp_path / "absent.csv", ["monthly"])


def test_an_unknown_list_given_to_the_import_stops_it_before_writing(session, monthly, tmp_path):
    path = write_csv(tmp_path, "email\none@example.com\n")
    with pytest.raises(NotFound, match="no list 'weekly'"):
        csv_import.import_csv(session, path, ["weekly"])
    assert session.scalars(select(Membership)).all() == []


def test_a_spreadsheet_file_with_a_byte_order_mark_and_odd_header_case_imports(session, monthly, tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes("\ufeffEmail , Name\r\none@example.com,Reader 1\r\n,,\r\n".encode("utf-8"))

    report = csv_import.import_csv(session, path, ["monthly"])

    assert (report.added, report.rejected) == (1, 0)
    assert subs.get_subscriber(session, "one@example.com").name == "Reader 1"


# -- CSV export --------------------------------------------------------------


def test_export_round_trips_through_import(session, monthly, tmp_path):
    source = write_csv(
        tmp_path,
        'email,name,lists,team\none@example.com,"Reader, One",staff,Finance\ntwo@example.com,Reader 2,,\n',
    )
    csv_import.import_csv(session, source, ["monthly"])
    subs.add_subscriber(session, "left@example.com", lists=["monthly"])
    subs.unsubscribe(session, "left@example.com")
    exported = tmp_path / "export.csv"

    assert csv_export.export_csv(session, exported) == 2

    rows = list(csv.DictReader(exported.open(encoding="utf-8")))
    assert rows == [
        {"email": "one@example.com", "name": "Reader, One", "lists": "monthly;staff", "team": "Finance"},
        {"email": "two@example.com", "name": "Reader 2", "lists": "monthly", "team": ""},
    ]
    again = csv_import.import_csv(session, exported, [])
    assert (again.unchanged, again.added, again.updated, again.rejected) == (2, 0, 0, 0)


def test_export_of_one_list_writes_only_its_members(session, monthly):
    subs.add_subscriber(session, "both@example.com", lists=["monthly", "staff"])
    subs.add_subscriber(session, "monthly-only@example.com", lists=["monthly"])
    out = io.StringIO()

    csv_export.export_csv(session, out, "staff")

    assert out.getvalue().splitlines() == ["email,name,lists", "both@example.com,,staff"]
