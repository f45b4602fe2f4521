"""Change a YAML file's values and keep everything else as it was written.

A form saves the values it shows; the file keeps its comments, key order,
quoting, indentation and blank lines, so a changed field is a one-line diff
in git. ``ruamel.yaml``'s round-trip mode carries the layout; ``updated``
touches only the keys whose values differ.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import (DoubleQuotedScalarString, FoldedScalarString, LiteralScalarString,
                                      SingleQuotedScalarString)
from ruamel.yaml.util import load_yaml_guess_indent

_STYLES = (DoubleQuotedScalarString, SingleQuotedScalarString, LiteralScalarString, FoldedScalarString)


class Unreadable(ValueError):
    """The text is not a YAML mapping ruamel can keep the layout of."""


def updated(text: str, values: dict, order: Sequence[str] = ()) -> str:
    """``text`` (a YAML mapping) holding ``values``: keys missing from ``values`` go,
    changed ones are set in place, new ones are added (before the first key of
    ``order`` that follows them there, else at the end); the rest is kept as written."""
    yaml = _yaml(text)
    try:
        data = yaml.load(text) if text.strip() else CommentedMap()
    except YAMLError as exc:
        raise Unreadable(str(exc)) from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise Unreadable("it is not a list of `field: value` lines")
    _merge_map(data, values, order)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def dumped(values: dict) -> str:
    """A new file's text, as people write YAML (block style, ``|`` for several lines)."""
    return updated("", values, tuple(values))


def _yaml(text: str) -> YAML:
    """A round-trip reader and writer indenting as ``text`` does."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line that was one line
    yaml.allow_unicode = True
    mapping, sequence, offset = 2, 2, 0
    if text.strip():
        try:
            _data, indent, dash_offset = load_yaml_guess_indent(text)
        except YAMLError:
            indent, dash_offset = None, None
        if dash_offset is None:  # no list: ``indent`` is the mappings'
            mapping = sequence = indent or 2
        else:  # ``indent`` is where a list item's text starts
            sequence, offset = indent, dash_offset
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _merge_map(target: CommentedMap, values: dict, order: Sequence[str] = ()) -> None:
    for key in [k for k in target if k not in values]:
        del target[key]
    for key, value in values.items():
        if key in target:
            target[key] = _merged(target[key], value)
        else:
            target.insert(_position(target, key, order), key, _fresh(value))


def _position(target: CommentedMap, key: str, order: Sequence[str]) -> int:
    if key in order:
        later = order[order.index(key) + 1:]
        for index, existing in enumerate(target):
            if existing in later:
                return index
    return len(target)


def _merged(old: Any, new: Any) -> Any:
    """``new``, reusing ``old`` (its layout and comments) wherever they agree."""
    if isinstance(old, CommentedMap) and isinstance(new, dict):
        _merge_map(old, new)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        for index, item in enumerate(new):
            if index < len(old):
                old[index] = _merged(old[index], item)
            else:
                old.append(_fresh(item))
        del old[len(new):]
        return old
    if _same(old, new):
        return old
    if isinstance(old, _STYLES) and isinstance(new, str) and (type(old) in (LiteralScalarString, FoldedScalarString)
                                                              or "\n" not in new):
        if type(old) in (LiteralScalarString, FoldedScalarString) and old.endswith("\n") and not new.endswith("\n"):
            new += "\n"  # `|` stays `|`, not `|-`
        return type(old)(new)  # a quoted value stays quoted the same way
    return _fresh(new)


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, str) and isinstance(new, str):
        return _text(old) == _text(new)  # a form trims what it posts; ``|`` keeps a final newline
    # 1 == True in Python, but not in a file: a number stays a number.
    return old == new and isinstance(old, bool) == isinstance(new, bool)


def _text(value: str) -> str:
    return "\n".join(line.rstrip() for line in value.replace("\r\n", "\n").split("\n")).strip()


def _fresh(value: Any) -> Any:
    if isinstance(value, str):
        return LiteralScalarString(value) if "\n" in value else value
    if isinstance(value, dict):
        fresh = CommentedMap()
        for key, item in value.items():
            fresh[key] = _fresh(item)
        return fresh
    if isinstance(value, list):
        return CommentedSeq(_fresh(item) for item in value)
    return value
