"""Local times in the publication's zone, DST-correct, shown in both clocks."""

from datetime import datetime, timezone

import pytest

from newsletter.errors import InputError
from newsletter.sending.scheduling import parse_local_time


def test_winter_time_is_utc_in_london():
    when = parse_local_time("2026-12-01 09:00", "Europe/London")
    assert when.utc == datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    assert "GMT" in when.describe() and "09:00 UTC" in when.describe()


def test_summer_time_is_an_hour_ahead_of_utc():
    when = parse_local_time("2026-07-01T09:00", "Europe/London")
    assert when.utc == datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc)
    assert "BST" in when.describe() and "08:00 UTC" in when.describe()


def test_a_time_that_does_not_exist_is_refused():
    # Clocks go forward at 01:00 on 29 March 2026 in London.
    with pytest.raises(InputError) as err:
        parse_local_time("2026-03-29 01:30", "Europe/London")
    assert "does not exist" in str(err.value) and "--at" in str(err.value)


def test_a_time_that_happens_twice_is_the_first_and_says_so():
    # Clocks go back at 02:00 on 25 October 2026: 01:30 happens twice.
    when = parse_local_time("2026-10-25 01:30", "Europe/London")
    assert when.utc == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)
    assert "BST" in when.describe()


def test_unreadable_time_says_how_to_write_it():
    with pytest.raises(InputError) as err:
        parse_local_time("next tuesday", "Europe/London")
    assert "YYYY-MM-DD HH:MM" in str(err.value)


def test_unknown_zone_is_named():
    with pytest.raises(InputError) as err:
        parse_local_time("2026-12-01 09:00", "Mars/Olympus")
    assert "Mars/Olympus" in str(err.value)


# --- a send time as typed: parse_send_time ----------------------------------------------------


def test_a_send_time_in_the_past_is_refused_saying_the_time_it_is_there():
    from datetime import datetime, timezone

    from newsletter.sending.scheduling import parse_send_time

    now = datetime(2026, 12, 5, 12, 45, tzinfo=timezone.utc)
    with pytest.raises(InputError) as caught:
        parse_send_time("2026-12-01 09:00", "Europe/London", now=now, where="date and time")
    [problem] = caught.value.problems
    assert problem.where == "date and time"
    assert "is in the past: it is now Saturday 05 December 2026 12:45 GMT in Europe/London" in problem.message
    assert "2027-01-01 09:00" in problem.fix and "--" not in str(problem)
    assert parse_send_time("2026-12-05 12:46", "Europe/London", now=now).utc == datetime(2026, 12, 5, 12, 46,
                                                                                          tzinfo=timezone.utc)
    with pytest.raises(InputError) as unreadable:
        parse_send_time("next tuesday", "Europe/London", now=now, where="date and time")
    assert "2027-01-01 09:00" in str(unreadable.value) and "--at" not in str(unreadable.value)


def test_a_time_that_happens_twice_when_the_clocks_go_back_is_flagged():
    from datetime import datetime, timezone

    from newsletter.sending.scheduling import parse_send_time, repeated_time

    now = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)
    twice = parse_send_time("2026-10-25 01:30", "Europe/London", now=now)
    note = repeated_time(twice)
    assert "happens twice" in note and "BST (00:30 UTC)" in note and "01:30 UTC" in note
    assert repeated_time(parse_send_time("2026-10-25 03:30", "Europe/London", now=now)) == ""
