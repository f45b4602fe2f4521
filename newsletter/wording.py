"""Counts as people read them: "1 error", "25,000 recipients".

The console, the command line and the ops messages say how many of a thing
there are through ``counted``, so that nobody reads "1 error(s)" or has to
count the digits of 25000.
"""

from __future__ import annotations


def counted(number: int, noun: str, plural: str = "") -> str:
    """``number`` with thousands separators and ``noun``, in the plural unless
    it is one (``plural``, or the noun and an s)."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"
