"""Load and validate an issue folder: a manifest plus one Markdown file per section.

Every value keeps the file and line it was written on, so a problem found
now or later (by ``checks``) points the editor at the exact place. Loading
collects every problem in the folder and raises them together as one
``InputError``: an editor fixes them all in one pass instead of one per run.

Markdown files in the folder that ``issue.yaml`` does not list are ignored
without a warning, so drafts and notes can live beside the issue.

Checking one field's value is in ``fields``; each section kind's own fields,
in ``sections``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from dataclasses import fields as dataclass_fields
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import ContentError, InputError, Problem, spelling_fix
from newsletter.authoring.issue import DARK_COLOURS, SECTION_KINDS, Colours, Issue, Item, Publication, Section, Source
from newsletter.authoring.header_checks import header_field_problems
from newsletter.authoring.yamlsource import LineMap, parse_yaml, split_front_matter, location
from newsletter.authoring.fields import COLOUR, Fields, checked_slug, https_url, image_file, slugify
from newsletter.authoring.sending_block import read_sending_block
from newsletter.authoring.sections import COMMON_FIELDS, KIND_FIELDS, KIND_READERS, check_body

PUBLICATION_FILE = "publication.yaml"
MANIFEST_FILE = "issue.yaml"
# The web app's own top-level paths: a publication's pages are served at
# /<publication slug>/, so no publication may take one of these names.
RESERVED_PUBLICATION_SLUGS = frozenset(
    {"c", "confirm", "console", "healthz", "metrics", "ops", "p", "static", "subscribe", "u", "webhooks"}
)


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(location(path), f"the file cannot be read: {exc.strerror}",
                                "check that the file exists and can be read"))
        return None
    try:
        # Universal newlines, as read_text gives: a file saved with CRLF reads the same.
        return data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(Problem(location(path, line), f"the file is not UTF-8 text ({exc.reason} at byte "
                                f"{data[exc.start]:#04x})",
                                "save it as UTF-8 (most editors offer this under 'Save with encoding'), "
                                "or retype the character on this line"))
    return None


# --- the publication ----------------------------------------------------------

PUBLICATION_FIELDS = (
    "slug", "name", "from_name", "from_email", "reply_to", "postal_address", "web_base_url",
    "timezone", "language", "logo", "logo_alt", "logo_dark", "logo_width", "colours", "dark_colours",
    "why_receiving", "signup_url", "sending",
)


def load_publication(path: Path) -> Publication:
    """Read a ``publication.yaml``; raise InputError listing every problem."""
    problems: list[Problem] = []
    publication = _read_publication(Path(path), problems)
    if publication is None or any(p.is_error for p in problems):
        raise ContentError(problems)
    return publication


def find_publication_file(folder: Path) -> Path | None:
    """The nearest publication.yaml in ``folder`` or one of its parents."""
    for candidate in (folder, *folder.parents):
        if (candidate / PUBLICATION_FILE).is_file():
            return candidate / PUBLICATION_FILE
    return None


def _read_publication(path: Path, problems: list[Problem]) -> Publication | None:
    text = _read_text(path, problems)
    values = parse_yaml(text, path, 1, problems) if text is not None else None
    if values is None:
        return None
    if not isinstance(values, LineMap):
        problems.append(Problem(location(path, 1), "the file should be a list of `field: value` lines",
                                "start with `name: ...`; see docs/writing-an-issue.md"))
        return None
    fields = Fields(values, path, "the publication", problems, PUBLICATION_FIELDS)
    fields.check_unknown()
    name = fields.header_text("name", required=True)  # the List-Id header's phrase
    from_email = _email(fields, "from_email", required=True)
    # Resolved: "publication.yaml" given as is has a parent named "".
    slug = checked_slug(fields, "slug", default=path.resolve().parent.name)
    if slug in RESERVED_PUBLICATION_SLUGS:
        fields.problem("slug" if fields.has("slug") else None, f"{slug!r} is a path of the web app itself",
                       "set `slug:` to another name, e.g. the publication's name in lower case")
    publication = Publication(
        slug=slug,
        name=name,
        from_name=fields.header_text("from_name", default=name),
        from_email=from_email,
        reply_to=_email(fields, "reply_to") or from_email,
        postal_address=fields.text("postal_address", required=True),
        web_base_url=_web_base_url(fields),
        timezone=_timezone(fields),
        language=_language(fields),
        logo=image_file(fields, "logo", path.parent),
        logo_alt=fields.text("logo_alt", default=name),
        logo_dark=image_file(fields, "logo_dark", path.parent),
        logo_width=fields.number("logo_width"),
        colours=_colours(fields, "colours", Colours()),
        dark_colours=_colours(fields, "dark_colours", DARK_COLOURS),
        why_receiving=fields.text("why_receiving"),
        signup_url=https_url(fields, "signup_url") or "",
        sending=read_sending_block(fields, slug),
        source=Source(path, 1),
        lines=_lines_with_colours(values),
    )
    return publication


def _lines_with_colours(values: LineMap) -> dict[str, int]:
    """Field -> line, with "colours.text"-style entries, so a contrast check can name the colour's line."""
    lines = dict(values.key_lines)
    for group in ("colours", "dark_colours"):
        if isinstance(values.get(group), LineMap):
            lines |= {f"{group}.{key}": line for key, line in values[group].key_lines.items()}
    return lines


def _email(fields: Fields, key: str, required: bool = False) -> str:
    address = fields.text(key, required=required)
    if not address:
        return ""
    try:
        address = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        fields.problem(key, f"`{key}` is not an email address we can send from: {exc}", "write it like news@example.org")
        return address
    for problem in header_field_problems(key, address, address=True):  # what every message will check
        fields.problem(key, f"`{key}` {problem.message.removeprefix(repr(address) + ' ')}", problem.fix)
    return address


def _web_base_url(fields: Fields) -> str:
    url = https_url(fields, "web_base_url", required=True) or ""
    return url if not url or url.endswith("/") else url + "/"


def _timezone(fields: Fields) -> str:
    name = fields.text("timezone", default="Europe/London")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fields.problem("timezone", f"{name!r} is not a time zone we know", "use a name like Europe/London")
    return name


def _language(fields: Fields) -> str:
    language = fields.text("language", default="en-GB")
    if not re.match(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$", language):
        fields.problem("language", f"{language!r} is not a language tag", "use a tag like en-GB or cy")
    return language


def _colours(fields: Fields, name: str, defaults: Colours) -> Colours:
    values = fields.mapping(name)
    if values is None:
        return defaults
    known = tuple(f.name for f in dataclass_fields(Colours))
    colours = Fields(values, fields.path, f"`{name}`", fields.problems, known)
    colours.check_unknown()
    chosen = {}
    for key in known:
        value = colours.text(key)
        if value and not COLOUR.match(value):
            colours.problem(key, f"colour `{key}` should be a hex colour, not {value!r}",
                            "write it like \"#005eb8\", in quotes because of the #")
        elif value:
            chosen[key] = value
    return replace(defaults, **chosen)


def _default_id(path: Path) -> str:
    """'02-core-priorities.md' -> 'core-priorities': the number only orders files."""
    return slugify(re.sub(r"^\d+[-_. ]*", "", path.stem)) or slugify(path.stem) or "section"


def _front_matter(path: Path, problems: list[Problem]) -> tuple[LineMap, str, int] | None:
    text = _read_text(path, problems)
    if text is None:
        return None
    split = split_front_matter(text)
    if split is None:
        problems.append(Problem(location(path, 1), "the file does not start with a front matter block",
                                "begin it with a line '---', then 'kind: text' (or another kind), then '---'"))
        return None
    yaml_text, yaml_line, body, body_line = split
    values = parse_yaml(yaml_text, path, yaml_line, problems)
    if values is None:
        return None
    if not isinstance(values, LineMap):
        problems.append(Problem(location(path, yaml_line), "the front matter should be `field: value` lines",
                                "start it with 'kind: ...'"))
        return None
    return values, body, body_line


def _read_section(path: Path, folder: Path, problems: list[Problem]) -> Section | None:
    parsed = _front_matter(path, problems)
    if parsed is None:
        return None
    values, body, body_line = parsed
    fields = Fields(values, path, "the section", problems)
    kind = fields.text("kind", required=True)
    if kind and kind not in SECTION_KINDS:
        fields.problem("kind", f"there is no section kind {kind!r}", spelling_fix(kind, SECTION_KINDS, "kinds are"))
    if kind not in SECTION_KINDS:
        return None
    fields.what, fields.known = f"this {kind} section", COMMON_FIELDS + KIND_FIELDS[kind]
    fields.check_unknown()
    check_body(fields, kind, body, body_line)
    return Section(kind=kind, id=checked_slug(fields, "id", default=_default_id(path)), title=fields.text("title"),
                   body=body, source=fields.source("kind"), body_line=body_line, **KIND_READERS[kind](fields, folder))


# --- the issue -------------------------------------------------------------------

MANIFEST_FIELDS = ("title", "subject", "preheader", "date", "slug", "sections")


def load_issue(folder: Path) -> Issue:
    """Load the issue in ``folder``; raise one InputError listing every problem."""
    issue, problems = read_issue(folder)
    if issue is None or any(problem.is_error for problem in problems):
        raise ContentError(problems)
    return issue


def read_issue(folder: Path) -> tuple[Issue | None, list[Problem]]:
    """The issue in ``folder`` as far as it can be read, and every problem found on the way.

    The issue is None when there is none to speak of (no publication, no
    manifest); otherwise it is returned even with errors, so that the other
    checks can still run on it and every finding is shown at once (the console).
    """
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        raise InputError(Problem(location(folder), f"there is no {MANIFEST_FILE} in this folder",
                                 f"give the issue's folder, the one holding {MANIFEST_FILE}; "
                                 "see docs/writing-an-issue.md"))
    problems: list[Problem] = []
    publication = _issue_publication(folder, problems)
    manifest = parse_yaml(_read_text(folder / MANIFEST_FILE, problems) or "", folder / MANIFEST_FILE, 1, problems)
    if not isinstance(manifest, LineMap):
        if manifest is not None:
            problems.append(Problem(location(folder / MANIFEST_FILE, 1), f"{MANIFEST_FILE} should be `field: value` lines",
                                    "start it with 'title: ...'"))
        return None, problems
    fields = Fields(manifest, folder / MANIFEST_FILE, MANIFEST_FILE, problems, MANIFEST_FIELDS)
    fields.check_unknown()
    issue = Issue(
        publication=publication,
        # Resolved: `newsletter check .` gives a folder named "".
        slug=checked_slug(fields, "slug", default=folder.resolve().name),
        title=fields.text("title", required=True),
        subject=fields.header_text("subject", required=True),
        # Not a header, but one line of the inbox like one: the same rule.
        preheader=fields.header_text("preheader"),
        issue_date=_issue_date(fields),
        sections=tuple(_sections(fields, folder)),
        folder=folder,
        source=Source(folder / MANIFEST_FILE, 1),
        lines=dict(manifest.key_lines),
    )
    _check_unique_ids(issue.sections, problems)
    return (issue if publication is not None else None), problems


def _issue_publication(folder: Path, problems: list[Problem]) -> Publication | None:
    path = find_publication_file(folder.resolve())
    if path is None:
        problems.append(Problem(location(folder), f"there is no {PUBLICATION_FILE} here or in a folder above",
                                f"create {PUBLICATION_FILE} in the publication's folder; see docs/writing-an-issue.md"))
        return None
    return _read_publication(path, problems)


def _issue_date(fields: Fields) -> date:
    value = fields.values.get("date")
    if value is None:
        fields.problem(None, f"{MANIFEST_FILE} has no `date`", "add a line like `date: 2021-09-01`")
        return date.min
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        fields.problem("date", f"`date` should be a date that exists, like 2021-09-01, not {str(value)!r}",
                       "write the date as YYYY-MM-DD")
        return date.min


def _sections(fields: Fields, folder: Path) -> list[Section]:
    sections, seen = [], set()
    for name, line in fields.entries("sections", required=True):
        path = _section_path(name, line, fields, folder)
        if path is None:
            continue
        if name in seen:
            fields.problems.append(Problem(location(fields.path, line), f"{name} is listed twice",
                                           "list each section file once"))
            continue
        seen.add(name)
        section = _read_section(path, folder, fields.problems)
        if section is not None:
            sections.append(section)
    return sections


def _section_path(name: object, line: int, fields: Fields, folder: Path) -> Path | None:
    where = location(fields.path, line)
    if not isinstance(name, str) or not name.endswith(".md") or "/" in name or "\\" in name:
        fields.problems.append(Problem(where, f"{name!r} is not a section file name",
                                       "list the names of .md files in this folder, like '- 01-letter.md'"))
        return None
    path = folder / name
    if not path.is_file():
        fields.problems.append(Problem(where, f"the section file {name} does not exist",
                                       f"create {location(path)}, or correct the name in {MANIFEST_FILE}"))
        return None
    return path


def _check_unique_ids(sections: tuple[Section, ...], problems: list[Problem]) -> None:
    """Section ids become anchors and item slugs become page names: no repeats."""
    first_section: dict[str, Section] = {}
    first_item: dict[str, Item] = {}
    for section in sections:
        if section.id in first_section:
            other = first_section[section.id].source
            problems.append(Problem(location(section.source.path, section.source.line),
                                    f"the section id {section.id!r} is also used by {location(other.path)}",
                                    "give one of them a different `id:`"))
        first_section.setdefault(section.id, section)
        for item in section.items:
            if item.slug in first_item:
                other = first_item[item.slug].source
                problems.append(Problem(location(item.source.path, item.source.line),
                                        f"the item slug {item.slug!r} is also used at {location(other.path, other.line)}",
                                        "give one of them a different `slug:` (or a different heading)"))
            first_item.setdefault(item.slug, item)
