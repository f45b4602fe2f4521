"""A suppression list brought from another provider, as a CSV file: every good
row suppressed by its address's key, each bad one named by line, nothing stored
twice, and an erased person's address never written back in plain text.
On SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from newsletter.audience.erasure import erase_subscriber
from newsletter.audience.subscribers import add_subscriber
from newsletter.audience.suppression_import import import_suppressions
from newsletter.audience.suppressions import is_suppressed
from newsletter.errors import InputError
from newsletter.store.models import Suppression

FILE = """Email,Reason,Note
gone@example.org,hard bounce,mailbox gone
Angry@Example.org,spam,
not-an-address,manual,
later@example.org,sulk,
quiet@example.org,,
gone@example.org,complaint,the same person again
"""


def entries(session) -> dict[str, tuple[str, str]]:
    return {row.email: (row.reason, row.source) for row in session.scalars(select(Suppression))}


def test_each_good_row_is_suppressed_with_its_reason_and_each_bad_one_named_by_line(session):
    report = import_suppressions(session, io.StringIO(FILE, newline=""), "manual", name="old-provider.csv")
    session.commit()

    assert (report.added, report.already, report.rejected) == (3, 1, 2)
    assert [(p.where, p.column) for p in report.problems] == [("old-provider.csv:4", "email"),
                                                              ("old-provider.csv:5", "reason")]
    assert "did you mean" not in report.problems[1].fix and "hard_bounce, complaint" in report.problems[1].fix
    assert entries(session) == {
        "gone@example.org": ("hard_bounce", "mailbox gone"),  # the first row of an address wins
        "angry@example.org": ("complaint", "imported from old-provider.csv"),  # another provider's word
        "quiet@example.org": ("manual", "imported from old-provider.csv"),  # the file's --reason
    }
    assert is_suppressed(session, "ANGRY@example.org")  # by the address's key, as everywhere


def test_importing_the_same_file_again_changes_nothing(session):
    import_suppressions(session, io.StringIO(FILE, newline=""), name="a.csv")
    session.commit()
    before = entries(session)
    again = import_suppressions(session, io.StringIO(FILE, newline=""), name="a.csv")
    session.commit()
    assert (again.added, again.already) == (0, 4) and entries(session) == before


def test_an_erased_persons_address_is_not_written_back(session):
    add_subscriber(session, "erased@example.org")
    erase_subscriber(session, "erased@example.org")
    session.commit()
    report = import_suppressions(session, io.StringIO("email\nERASED@example.org\n", newline=""), name="b.csv")
    session.commit()
    assert (report.added, report.already) == (0, 1)
    assert not any("erased@" in email for email in entries(session))  # only the erasure's hash
    assert is_suppressed(session, "erased@example.org")


@pytest.mark.parametrize("text, problem", [
    ("address\nx@example.org\n", "no email column"),
    ("", "the file is empty"),
    ("email,reason\n\n", "no rows under its first line"),
])
def test_a_file_that_cannot_be_read_stores_nothing_and_says_why(session, text, problem):
    with pytest.raises(InputError) as raised:
        import_suppressions(session, io.StringIO(text, newline=""), name="c.csv")
    assert problem in str(raised.value) and "c.csv" in str(raised.value)
    assert entries(session) == {}


def test_an_unknown_reason_for_the_file_is_refused_with_the_nearest(session):
    with pytest.raises(InputError) as raised:
        import_suppressions(session, io.StringIO(FILE, newline=""), "complaints_")
    assert "--reason" in str(raised.value) and "did you mean `complaint`?" in str(raised.value)
