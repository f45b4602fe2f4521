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
