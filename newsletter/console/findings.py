"""`newsletter check` for the console, and where each finding points in the forms.

This is the one place the console calls the checks (``content.load_issue``,
``render.render_issue``, ``checks.check_issue``) and reads the places their
problems name, so a change to the checks' format is adapted here alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from newsletter.authoring.checks import check_issue
from newsletter.authoring.content import MANIFEST_FILE, PUBLICATION_FILE, read_issue
from newsletter.errors import InputError, Problem
from newsletter.authoring.render import RenderedIssue, render_issue
from newsletter.authoring.yamlsource import LineList, LineMap, parse_yaml, split_front_matter

log = logging.getLogger(__name__)

# "<path>:<line>", "<path>: field <name>", or a name like "email HTML".
_WHERE = re.compile(r"^(?P<path>.*?)(?::(?P<line>\d+)|: field (?P<field>\w+))?$")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    message: str
    fix: str
    where: str  # as the CLI says it, with the issue folder's name
    file: str  # the draft's file it is in ("" when not in one: templates, the email as a whole)
    field: str  # the form field it belongs to ("" when unknown)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_dict(self) -> dict:
        return asdict(self)


def check_folder(folder: Path, templates_dir: Path | None = None) -> tuple[RenderedIssue | None, list[Finding]]:
    """Load, render and check like `newsletter check`; the rendering (None if it failed) and the findings.

    Every finding of every check at once: when the files have errors (a
    picture without its alt text, a missing file), what could be read is
    still rendered and checked, so the subject's length, the links and the
    logo are reported beside them rather than after they are fixed. The
    rendering is given back only when there was no error in loading.
    """
    folder = Path(folder)
    try:
        issue, problems = read_issue(folder)
    except InputError as exc:
        return None, [finding(problem, folder) for problem in exc.problems]
    rendered, unreadable = None, any(p.is_error for p in problems)
    found = [finding(problem, folder) for problem in problems]
    if issue is not None:
        try:
            rendered = render_issue(issue, templates_dir)
            checked = check_issue(issue, rendered)
        except InputError as exc:
            rendered, checked = None, exc.problems
        except Exception:  # noqa: BLE001 - an issue read with errors may not render; its errors are listed already
            if not unreadable:
                raise
            log.debug("an issue with errors could not be rendered", exc_info=True)
            checked = []
        # A field whose file has an error already says it once (the loader's "no alt text"
        # and the check's, about one picture): the checks add what is new.
        said = {(f.file, f.field) for f in found if f.field and f.is_error}
        found += [f for f in (finding(problem, folder) for problem in checked if problem not in problems)
                  if (f.file, f.field) not in said]
    if unreadable:
        rendered = None
    return rendered, sorted(found, key=_reading_order)


def _reading_order(f: Finding) -> tuple:
    file, _, line = f.where.rpartition(":")
    return (f.file == "", f.where, 0) if not line.isdigit() else (f.file == "", file, int(line))


def finding(problem: Problem, folder: Path) -> Finding:
    match = _WHERE.match(problem.where)
    path, line, field = match.group("path"), int(match.group("line") or 0), match.group("field") or ""
    name = _draft_file(path, folder)
    if name and not field:
        field = field_at(folder / name, line, problem.about) if name != PUBLICATION_FILE else ""
    if name == PUBLICATION_FILE:
        where = "the publication's settings"
    elif name:
        where = f"{folder.name}/{name}" + (f":{line}" if line else "")
    else:
        where = _without_paths(problem.where, folder)
    return Finding(problem.severity, _without_paths(problem.message, folder), _without_paths(problem.fix, folder),
                   where, name, field)


# An absolute path in a message: "/tmp/newsletter-draft-x/pub/issues/2021-09/chart.png". Not the
# path of a URL ("https://host/path"): one starts after a space, a quote or a bracket.
_PATH = re.compile(r"(?<![\w:/.\-])/(?:[^\s'\"(),:]+/)*[^\s'\"(),:]+")


def _without_paths(text: str, folder: Path) -> str:
    """``text`` with the server's paths taken out: a file of the issue by its name in the
    issue, anything else by its own name. The console runs checks in a temporary folder,
    which is nobody's business."""
    def shown(match: re.Match) -> str:
        candidate = Path(match.group(0))
        for base in (folder, folder.resolve()):
            try:
                return candidate.relative_to(base).as_posix() or folder.name
            except ValueError:
                continue
        return candidate.name
    return _PATH.sub(shown, text)


def _draft_file(path: str, folder: Path) -> str:
    """The name of the issue's file a problem names, or ""."""
    if not path or " " in path.strip():
        return ""
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    try:
        return candidate.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return PUBLICATION_FILE if candidate.name == PUBLICATION_FILE else ""


def field_at(path: Path, line: int, missing: str = "") -> str:
    """The form field that holds ``line`` of a section file or issue.yaml ("" if none does).

    ``missing`` names a field that is not in the file (a picture's alt text): the
    field of that name in the mapping that holds ``line``.
    """
    if not line or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.name == MANIFEST_FILE:
        values, body_line = parse_yaml(text, path, 1, []), 0
    else:
        split = split_front_matter(text)
        if split is None:
            return ""
        yaml_text, first, _body, body_line = split
        values = parse_yaml(yaml_text, path, first, [])
        if line >= body_line and not missing:
            return "body"
    if not isinstance(values, LineMap):
        return ""
    prefix, key = _field_in(values, line, "")
    if missing:
        return f"{prefix}{missing}"
    return f"{prefix}{key}" if key else prefix.rstrip("-_")


def _field_in(values: LineMap, line: int, prefix: str) -> tuple[str, str]:
    """(the prefix of the mapping holding ``line``, the key at it, "" when before every key)."""
    before = [(at, key) for key, at in values.key_lines.items() if at <= line]
    if not before:
        return prefix, ""
    _, key = max(before)
    value = values.get(key)
    if isinstance(value, LineList) and key in ("items", "figures"):
        entries = [(at, n) for n, at in enumerate(value.item_lines) if at <= line]
        if entries:
            _, n = max(entries)
            entry = value[n]
            if isinstance(entry, LineMap):
                return _field_in(entry, line, f"{prefix}{key}-{n}-")
            return prefix, f"{key}-{n}"
    if isinstance(value, LineMap) and key == "image":
        return _field_in(value, line, f"{prefix}image_")
    return prefix, key
