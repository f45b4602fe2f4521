"""Segments and audiences on the command line, as a comms editor uses them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter.config import get_settings
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, Segment, Send, SendList
from tests.cli.stored import count
from tests.conftest import SAMPLE_ISSUE


@pytest.fixture
def people(cli):
    result = cli("publications", "add", SAMPLE_ISSUE.parent.parent)
    assert result.exit_code == 0, result.output
    for slug in ("staff", "board"):
        assert cli("lists", "create", slug, "--name", slug.title()).exit_code == 0
    for i in range(12):
        args = ["subscribers", "add", f"reader{i:02d}@example.com", "--name", f"Reader {i:02d}", "--list", "staff",
                "--attribute", f"organisation={'City Council' if i % 2 else 'Press'}"]
        assert cli(*args).exit_code == 0
    assert cli("subscribers", "add", "Chair@Example.com", "--name", "Chair", "--list", "board").exit_code == 0
    # The same person in another case: still one subscriber, now on both lists.
    assert cli("subscribers", "add", "CHAIR@example.com", "--list", "staff").exit_code == 0


def test_create_list_show_and_count_a_segment(cli, people):
    created = cli("segments", "create", "council", "--where", 'organisation is "city council"')
    assert created.exit_code == 0, created.output
    assert "created segment council" in created.output and "6 subscribers today" in created.output

    listed = cli("segments", "list")
    assert "council" in listed.output and 'organisation is "city council"' in listed.output

    shown = cli("segments", "show", "council")
    assert shown.exit_code == 0, shown.output
    assert "6 subscribers today" in shown.output
    assert "reader01@example.com" in shown.output and "reader00@example.com" not in shown.output

    assert cli("segments", "count", "council").output.strip() == "6"
    assert cli("segments", "count", "--where", "in list staff and in list board").output.strip() == "1"


def test_a_bad_condition_is_refused_with_what_to_write_and_nothing_is_saved(cli, people):
    result = cli("segments", "create", "council", "--where", "organisation contains council")

    assert result.exit_code == 2
    assert "column 23" in result.output and "not quoted" in result.output
    assert 'organisation contains "council"' in result.output
    assert "Traceback" not in result.output
    assert count(Segment) == 0

    unknown = cli("segments", "create", "council", "--where", 'organization is "x"')
    assert unknown.exit_code == 2 and "unknown field 'organization'" in unknown.output and "organisation" in unknown.output


def test_schedule_to_a_segment_shows_the_count_and_ten_people_first(cli, people):
    assert cli("segments", "create", "council", "--where", 'organisation is "City Council"').exit_code == 0

    result = cli("schedule", SAMPLE_ISSUE, "--segment", "council", "--at", "2099-07-01 09:30")

    assert result.exit_code == 0, result.output
    assert "6 subscribers today" in result.output
    assert result.output.index("subscribers today") < result.output.index("Scheduled send")
    assert "segment council" in result.output
    with session_scope(get_settings()) as session:
        send = session.scalars(select(Send)).one()
        assert (send.segment_name, send.segment_condition) == ("council", 'organisation is "City Council"')
    assert "segment council" in cli("sends", "show", "1").output


def test_schedule_to_several_lists_counts_a_person_on_both_once_and_shows_ten(cli, people):
    result = cli("schedule", SAMPLE_ISSUE, "--list", "staff", "--list", "board", "--now")

    assert result.exit_code == 0, result.output
    assert "13 subscribers today" in result.output  # 12 readers and the chair, once
    assert "the first 10" in result.output
    assert result.output.count("@example.com") == 10
    assert "lists staff, board" in result.output
    assert count(SendList) == 2


def test_preview_shows_the_audience_and_stores_nothing(cli, people):
    result = cli("schedule", SAMPLE_ISSUE, "--list", "board", "--preview")

    assert result.exit_code == 0, result.output
    assert "1 subscriber today" in result.output and "Chair@example.com" in result.output  # as first typed (domain normalised)
    assert "Nothing was scheduled" in result.output
    assert count(Send) == 0 and count(IssueRow) == 0


def test_schedule_without_an_audience_or_to_an_unknown_segment_is_a_clear_error(cli, people):
    nobody = cli("schedule", SAMPLE_ISSUE, "--now")
    assert nobody.exit_code == 2 and "--segment" in nobody.output

    unknown = cli("schedule", SAMPLE_ISSUE, "--segment", "trustees", "--now")
    assert unknown.exit_code == 2 and "no segment 'trustees'" in unknown.output
    assert count(Send) == 0 and count(IssueRow) == 0
