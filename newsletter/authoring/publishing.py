"""From an issue folder to a rendered issue that passed every check."""

from __future__ import annotations

from pathlib import Path

from newsletter.authoring.checks import check_issue
from newsletter.authoring.content import load_issue
from newsletter.errors import ContentError, Problem
from newsletter.authoring.render import RenderedIssue, render_issue


def checked_render(folder: Path, templates_dir: Path | None = None) -> tuple[RenderedIssue, list[Problem]]:
    """Load, render and check; raise ContentError on any error, return the warnings."""
    issue = load_issue(folder)
    rendered = render_issue(issue, templates_dir)
    problems = check_issue(issue, rendered)
    errors = [p for p in problems if p.is_error]
    if errors:
        raise ContentError(errors + [p for p in problems if not p.is_error])
    return rendered, problems
