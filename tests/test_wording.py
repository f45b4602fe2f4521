"""Counts as the console and the command line say them."""

from newsletter.wording import counted


def test_one_is_singular_and_any_other_number_plural():
    assert counted(1, "error") == "1 error"
    assert counted(0, "warning") == "0 warnings"
    assert counted(2, "recipient") == "2 recipients"


def test_thousands_are_grouped_so_a_large_audience_reads_at_a_glance():
    assert counted(25000, "recipient") == "25,000 recipients"
    assert counted(1234567, "row") == "1,234,567 rows"


def test_an_irregular_plural_is_given():
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"
