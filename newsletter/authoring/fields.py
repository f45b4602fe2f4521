"""Reading one YAML mapping: each field's value checked, each problem at its line.

``Fields`` wraps a mapping of front matter or a manifest; the helpers here
check the kinds of value a field can hold (text, a flag, an https URL, an
image file beside the issue) and collect problems instead of raising, so a
folder's problems are reported together.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.errors import Problem, spelling_fix
from newsletter.authoring.issue import Source
from newsletter.authoring.header_checks import header_field_problems
from newsletter.authoring.yamlsource import LineList, LineMap, location

# Formats every common mail client shows; SVG and WebP are not among them.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


# --- reading fields -------------------------------------------------------------


@dataclass
class Fields:
    """One YAML mapping being read: reports problems at the line of each key."""

    values: LineMap
    path: Path
    what: str  # "a letter section", "item 2", for messages
    problems: list[Problem]
    known: tuple[str, ...] = ()
    used: set = field(default_factory=set)

    def line(self, key: str | None = None) -> int:
        return self.values.key_lines.get(key, self.values.line) if key else self.values.line

    def source(self, key: str | None = None) -> Source:
        return Source(self.path, self.line(key))

    def problem(self, key: str | None, message: str, fix: str, about: str = "") -> None:
        """A problem at ``key``'s line (the mapping's when None); ``about`` names a missing field it is about."""
        self.problems.append(Problem(location(self.path, self.line(key)), message, fix, about=about))

    def has(self, key: str) -> bool:
        return self.values.get(key) not in (None, "")

    def text(self, key: str, required: bool = False, default: str = "") -> str:
        value = self.values.get(key)
        if value is None or value == "":
            if required:
                self.problem(None, f"{self.what} has no `{key}`", f"add a line `{key}: ...`", about=key)
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(key, f"`{key}` should be text, not {_describe(value)}",
                         "write it as text on one line, or as a block after `|`; put it in quotes if it contains ': '")
            return default
        return str(value).strip()

    def flag(self, key: str) -> bool:
        value = self.values.get(key, False)
        if not isinstance(value, bool):
            self.problem(key, f"`{key}` should be true or false, not {_describe(value)}", f"write `{key}: true` or leave it out")
            return False
        return value

    def number(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problem(key, f"`{key}` should be a whole number of pixels, not {_describe(value)}", f"write e.g. `{key}: 600`")
            return None
        return value

    def mapping(self, key: str) -> LineMap | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, LineMap):
            self.problem(key, f"`{key}` should be a group of fields, not {_describe(value)}",
                         f"put its fields on the lines below `{key}:`, indented")
            return None
        return value

    def entries(self, key: str, required: bool = False) -> list[tuple[object, int]]:
        """(entry, line) for each entry of a list field."""
        value = self.values.get(key)
        if value is None or value == []:
            if required:
                self.problem(key if key in self.values else None, f"{self.what} has no `{key}`",
                             f"add `{key}:` followed by its entries, one per line starting with '- '")
            return []
        if not isinstance(value, LineList):
            self.problem(key, f"`{key}` should be a list, not {_describe(value)}", "start each entry on its own line with '- '")
            return []
        return list(zip(value, value.item_lines))

    def header_text(self, key: str, required: bool = False, default: str = "") -> str:
        """Text that goes into a message header: refused here if the send would refuse it."""
        value = self.text(key, required=required, default=default)
        if self.has(key):
            for problem in header_field_problems(key, value):
                self.problem(key, f"`{key}` {problem.message}", problem.fix)
        return value

    def check_unknown(self) -> None:
        for key in self.values:
            if key not in self.known:
                self.problem(key, f"{self.what} has an unknown field `{key}`",
                             spelling_fix(key, self.known, "fields it can have are"))


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a group of fields"
    if isinstance(value, (date, datetime)):
        return "a date"
    return f"{value!r}"


def https_url(fields: Fields, key: str, required: bool = False) -> str | None:
    url = fields.text(key, required=required)
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        fields.problem(key, f"`{key}` should be a full https:// address, not {url!r}",
                       "copy the address from the browser's address bar; it starts with https://")
        return None
    return url


def slugify(text: str, limit: int = 60) -> str:
    """'Innovative trial aims to save ...' -> 'innovative-trial-aims-to-save'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > limit:
        slug = slug[:limit].rsplit("-", 1)[0]
    return slug


def checked_slug(fields: Fields, key: str, default: str) -> str:
    slug = fields.text(key) or slugify(default)
    if not SLUG.match(slug):
        where = key if fields.has(key) else None
        fields.problem(where, f"{slug!r} cannot be used in web addresses",
                       f"set `{key}:` to lower-case letters, digits and hyphens, like 2021-09")
    return slug


# --- images ---------------------------------------------------------------------


def image_file(fields: Fields, key: str, base: Path) -> Path | None:
    name = fields.text(key)
    if not name:
        return None
    path = base / name
    if not path.is_file():
        fields.problem(key, f"the image {name!r} does not exist (looked for {location(path)})",
                       f"put the file there, or correct the name; it is relative to {location(base)}")
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        fields.problem(key, f"{name!r} is not a format email clients show",
                       f"save it as {', '.join(IMAGE_SUFFIXES)}")
        return None
    return path
