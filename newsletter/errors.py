"""Errors people can act on.

Every problem with what a person wrote names where it is (a file and line, or
a field) and what to do about it. Commands print these instead of tracebacks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

# "path/to/file.md:14" at the start of a Problem's ``where``.
_FILE_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+)$")


@dataclass(frozen=True)
class Problem:
    where: str  # "issues/2021-09/02-priorities.md:14" or "field subject" or "CSV line 7"
    message: str  # what is wrong
    fix: str = ""  # what to do about it
    severity: str = "error"  # "error" or "warning"
    # The field it is about, when that field is missing and so has no line of its own
    # (``where`` is then the line of the mapping that should hold it): "alt".
    about: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.severity}: {self.message}"
        if self.fix:
            text += f" ({self.fix})"
        return text

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple[str, int, str]:
        """File, then line, then the message: the order an editor works through them."""
        match = _FILE_LINE.match(self.where)
        if match:
            return match["file"], int(match["line"]), self.message
        return self.where, 0, self.message


def spelling_fix(word: object, choices: Sequence[str], what: str) -> str:
    """The fix for a name that is not one of ``choices``: the nearest, when one
    is near ("did you mean `teasers`?"), then every choice."""
    near = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6) if isinstance(word, str) else []
    listed = f"{what}: {', '.join(choices)}"
    return f"did you mean `{near[0]}`? The {listed}" if near else f"check the spelling; the {listed}"


def in_reading_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by file and line, each listed once."""
    return sorted(dict.fromkeys(problems), key=Problem.sort_key)


class NewsletterError(Exception):
    """Base for errors a command reports to its user without a traceback."""


class InputError(NewsletterError):
    """Something a person wrote or asked for cannot be used.

    Carries one or more problems; ``str()`` lists them one per line.
    Commands exit with USAGE_ERROR for it (see ContentError for the other code).
    """

    def __init__(self, problems: list[Problem] | Problem | str, where: str = "", fix: str = ""):
        if isinstance(problems, str):
            problems = [Problem(where or "input", problems, fix)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFound(NewsletterError):
    """A named thing (list, issue, send, subscriber) does not exist."""


class ContentError(InputError):
    """An issue or publication, as written, has errors: commands exit with CONTENT_ERRORS."""


# The exit codes of check, build, preview, schedule and proof; see EXIT_CODES_HELP.
CONTENT_ERRORS = 1
USAGE_ERROR = 2
EXIT_CODES_HELP = (
    "Problems are printed to standard error, one a line, in file and line order, "
    "as FILE:LINE: error: what is wrong (what to do); warnings the same way with 'warning'. "
    f"Exit codes: 0 no errors (there may be warnings); {CONTENT_ERRORS} the issue or its publication "
    f"has errors, every one listed; {USAGE_ERROR} the command could not run as asked (a folder that is "
    "not an issue, a bad option, an unknown list, the configuration)."
)
