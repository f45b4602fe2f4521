"""Errors people can act on.

Every problem with what a person wrote names where it is (a file and line, or
a field) and what to do about it. Commands print these instead of tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    where: str  # "issues/2021-09/02-priorities.md:14" or "field subject" or "CSV line 7"
    message: str  # what is wrong
    fix: str = ""  # what to do about it
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        text = f"{self.where}: {self.severity}: {self.message}"
        if self.fix:
            text += f" ({self.fix})"
        return text

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class NewsletterError(Exception):
    """Base for errors a command reports to its user without a traceback."""


class InputError(NewsletterError):
    """Something a person wrote or asked for cannot be used.

    Carries one or more problems; ``str()`` lists them one per line.
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
