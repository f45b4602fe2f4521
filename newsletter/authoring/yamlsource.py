"""YAML that remembers where each value was written.

Front matter and manifests are parsed into mappings and lists that know the
1-based file line of every key and entry, so a problem found at any later
stage can point the editor at the exact line.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import yaml

from newsletter.errors import Problem


class LineMap(dict):
    """A YAML mapping with the 1-based file line of itself and of each key."""

    line: int = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict = {}


class LineList(list):
    """A YAML sequence with the 1-based file line of itself and of each entry."""

    line: int = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.item_lines: list[int] = []


_YAML_FIX = (
    "check the indentation and quoting on this line and the one before; "
    "text containing ': ' or starting with a quote, '-', '[' or '{' needs quotes"
)


# At most this many YAML errors are reported from one file.
MAX_YAML_ERRORS = 20


def parse_yaml(text: str, path: Path, first_line: int, problems: list[Problem]):
    """Parse YAML text that starts at ``first_line`` of ``path``; None if unreadable.

    YAML stops at its first error. To report the others in the same pass,
    the line at fault is blanked and the text read again, until it reads or
    the errors stop moving down the file.
    """
    node, errors = None, []
    lines = text.splitlines(keepends=True)
    while len(errors) < MAX_YAML_ERRORS:
        try:
            # compose keeps the node marks that yaml.safe_load throws away.
            node = yaml.compose("".join(lines), Loader=yaml.SafeLoader)
            break
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = mark.line if mark else 0
            message = f"the YAML cannot be read: {exc.problem}"
            opened = exc.context_mark.line if exc.context_mark and exc.context else at
            if opened < at:
                # A quote or bracket left open: the cause is where it opened,
                # and everything after it is part of the same error.
                message += f" on line {first_line + at} ({exc.context} that starts here)"
            errors.append(Problem(location(path, first_line + min(opened, at)), message, _YAML_FIX))
            if opened < at or at >= len(lines) or (len(errors) > 1 and at <= _line_of(errors[-2], path, first_line)):
                break  # nothing more to learn by reading on
            lines[at] = "\n"
        except yaml.YAMLError as exc:
            errors.append(Problem(location(path, first_line), f"the YAML cannot be read: {exc}", _YAML_FIX))
            break
    if errors:
        problems.extend(errors)
        return None
    if node is None:
        empty = LineMap()
        empty.line = first_line
        return empty
    return _build(node, first_line, yaml.constructor.SafeConstructor())


def _line_of(problem: Problem, path: Path, first_line: int) -> int:
    """The 0-based line within the YAML text of a problem made by parse_yaml."""
    return int(problem.where.rsplit(":", 1)[1]) - first_line


def _build(node: yaml.Node, first_line: int, constructor: yaml.constructor.SafeConstructor):
    line = first_line + node.start_mark.line
    if isinstance(node, yaml.MappingNode):
        result = LineMap()
        result.line = line
        for key_node, value_node in node.value:
            key = _build(key_node, first_line, constructor)
            key = key if isinstance(key, (str, int, float, bool, date)) or key is None else str(key)
            result[key] = _build(value_node, first_line, constructor)
            result.key_lines[key] = first_line + key_node.start_mark.line
        return result
    if isinstance(node, yaml.SequenceNode):
        result = LineList()
        result.line = line
        for entry in node.value:
            result.append(_build(entry, first_line, constructor))
            result.item_lines.append(first_line + entry.start_mark.line)
        return result
    try:
        return constructor.construct_object(node, deep=True)
    except (ValueError, yaml.YAMLError):
        # "2021-09-31" looks like a date to YAML but is not one: keep the
        # text, and let the field's own check say what is wrong with it.
        return node.value


def split_front_matter(text: str) -> tuple[str, int, str, int] | None:
    """(YAML, its first line, Markdown body, the body's first line), all 1-based."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            body_lines = lines[index + 1:]
            skipped = 0
            while skipped < len(body_lines) and not body_lines[skipped].strip():
                skipped += 1
            body = "".join(body_lines[skipped:]).rstrip()
            return "".join(lines[1:index]), 2, body, index + 2 + skipped
    return None


def location(path: Path, line: int = 0) -> str:
    """A path the editor can open from where they ran the command."""
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    return f"{shown}:{line}" if line else str(shown)
