"""Section files and issue.yaml as forms: read a file into fields, write fields back.

A file is rewritten only when its form is saved, so a draft nobody edited
downloads exactly as it was uploaded; a save changes only the values that
changed, keeping comments, order and quoting (``yamledit``). Form field names are the ones
``findings.field_at`` gives: ``title``, ``body``, ``items-0-heading``,
``items-0-image_src``, ``figures-1-label``, ``image_alt`` ...
Fields the form does not know are kept as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Mapping

import yaml

from newsletter.authoring.sections import KIND_FIELDS
from newsletter.console import yamledit
from newsletter.errors import InputError, Problem
from newsletter.authoring.issue import SECTION_KINDS
from newsletter.authoring.yamlsource import split_front_matter

# The fields each kind's form shows, in order, beside title and the body.
FORM_FIELDS = {
    "letter": ("author", "role", "signoff", "image_src", "image_alt"),
    "teasers": (),
    "news": (),
    "figures": (),
    "image": ("src", "alt", "decorative", "caption", "link", "width"),
    "text": (),
}
ITEM_FIELDS = ("heading", "summary", "url", "article", "link_text", "slug", "image_src", "image_alt")
FIGURE_FIELDS = ("value", "label")
LONG_FIELDS = {"summary", "article", "caption", "body"}  # Markdown: text areas
HAS_BODY = {"letter", "teasers", "news", "figures", "text"}
MANIFEST_FORM_FIELDS = ("title", "subject", "preheader", "date")


@dataclass
class SectionForm:
    kind: str
    values: dict  # the front matter, as YAML gives it
    body: str = ""
    items: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    source: str = ""  # the front matter as written, whose layout a save keeps
    written_body: str = ""  # what follows the front matter as written, kept when the form's body is the same text

    def value(self, name: str) -> str:
        return flat(self.values, name)

    def rows(self, list_name: str) -> list[dict]:
        return self.items if list_name == "items" else self.figures


def flat(values: dict, name: str) -> str:
    """"image_src" reads values["image"]["src"]."""
    if name.startswith("image_") and name not in values:
        nested = values.get("image")
        value = nested.get(name[len("image_"):]) if isinstance(nested, dict) else None
    else:
        value = values.get(name)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    return str(value)


def read_section(data: bytes, name: str) -> SectionForm:
    text = data.decode("utf-8-sig", errors="replace")
    split = split_front_matter(text)
    if split is None:
        raise InputError(Problem(name, "the file does not start with a front matter block",
                                 "download the issue, fix the file, and upload it again"))
    yaml_text, _line, body, _body_line = split
    after_front = "".join(text.splitlines(keepends=True)[len(yaml_text.splitlines()) + 2:])
    try:
        values = yaml.safe_load(yaml_text) or {}
    except yaml.YAMLError as exc:
        raise InputError(Problem(name, f"its front matter cannot be read: {exc}",
                                 "download the issue, fix the file, and upload it again")) from None
    if not isinstance(values, dict):
        raise InputError(Problem(name, "its front matter is not a list of fields", "start it with 'kind: ...'"))
    items = [i for i in values.get("items") or [] if isinstance(i, dict)]
    figures = [f for f in values.get("figures") or [] if isinstance(f, dict)]
    return SectionForm(str(values.get("kind", "text")), values, body, items, figures, yaml_text, after_front)


def section_from_form(original: SectionForm, form: Mapping[str, str]) -> SectionForm:
    """The section as the posted form has it; unknown fields of the original stay."""
    kind = original.kind
    values = {k: v for k, v in original.values.items()}
    values["kind"] = kind
    _set(values, "title", form.get("title", ""))
    for name in FORM_FIELDS[kind]:
        _set(values, name, form.get(name, ""), boolean=(name == "decorative"), number=(name == "width"))
    if kind in ("teasers", "news"):
        values["items"] = _rows(original.items, form, "items", ITEM_FIELDS)
    if kind == "figures":
        values["figures"] = _rows(original.figures, form, "figures", FIGURE_FIELDS)
    body = form.get("body", "") if kind in HAS_BODY else ""
    return SectionForm(kind, values, _tidy(body), list(values.get("items") or []), list(values.get("figures") or []),
                       original.source, original.written_body)


def _rows(originals: list[dict], form: Mapping[str, str], list_name: str, names: tuple[str, ...]) -> list[dict]:
    count = int(form.get(f"{list_name}-count", len(originals)) or 0)
    rows = []
    for n in range(count):
        if form.get(f"{list_name}-{n}-remove"):
            continue
        row = dict(originals[n]) if n < len(originals) else {}
        for name in names:
            _set(row, name, form.get(f"{list_name}-{n}-{name}", ""))
        rows.append(row)
    if form.get(f"{list_name}-add"):
        rows.append({names[0]: "", names[1]: ""})
    return rows


def _set(values: dict, name: str, raw: str, boolean: bool = False, number: bool = False) -> None:
    text = _tidy(raw)
    if name.startswith("image_"):
        nested = dict(values.get("image") or {}) if isinstance(values.get("image"), dict) else {}
        _set(nested, name[len("image_"):], raw)
        if nested:
            values["image"] = nested
        else:
            values.pop("image", None)
        return
    if boolean:
        value = bool(text) and text.lower() not in ("false", "no", "0")
        if value:
            values[name] = True
        else:
            values.pop(name, None)
    elif not text:
        values.pop(name, None)
    elif number and text.isdigit():
        values[name] = int(text)
    else:
        values[name] = text


def _tidy(text: str) -> str:
    """Browsers post CRLF; files keep LF. Trailing spaces at line ends carry no meaning in Markdown here."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip()


def write_section(section: SectionForm) -> bytes:
    ordered = {"kind": section.kind}
    for key in ("id", "title", *KIND_FIELDS.get(section.kind, ())):
        if key in section.values:
            ordered[key] = section.values[key]
    ordered |= {k: v for k, v in section.values.items() if k not in ordered}
    for key in [k for k, v in ordered.items() if v in ("", None, [])]:
        if key not in ("items", "figures"):
            ordered.pop(key)
    front = _front_text(section.source, ordered)
    body = section.body.strip()
    if section.written_body.strip() and _tidy(section.written_body) == body:
        return f"---\n{front}---\n{section.written_body}".encode()
    return f"---\n{front}---\n{body}\n".encode() if body else f"---\n{front}---\n".encode()


def new_section(kind: str, title: str) -> bytes:
    if kind not in SECTION_KINDS:
        raise InputError(Problem("kind", f"there is no section kind {kind!r}", f"choose one of {', '.join(SECTION_KINDS)}"))
    starters = {
        "letter": ({"author": "Your name"}, "Write the letter here."),
        "teasers": ({"items": [{"heading": "A heading", "summary": "A sentence or two.",
                                "url": "https://www.example.org/"}]}, ""),
        "news": ({"items": [{"heading": "A heading", "summary": "A sentence or two.",
                             "url": "https://www.example.org/"}]}, ""),
        "figures": ({"figures": [{"value": "0", "label": "what it counts"}]}, ""),
        "image": ({"src": "", "alt": ""}, ""),
        "text": ({}, "Write the text here."),
    }
    values, body = starters[kind]
    return write_section(SectionForm(kind, {"kind": kind, "title": title or kind.capitalize(), **values}, body,
                                     values.get("items", []), values.get("figures", [])))


# --- issue.yaml ----------------------------------------------------------------------


class Manifest(dict):
    """issue.yaml's values, remembering the text they came from (``source``)."""

    source: str = ""


def read_manifest(data: bytes) -> Manifest:
    text = data.decode("utf-8-sig", errors="replace")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(Problem("issue.yaml", f"it cannot be read: {exc}",
                                 "download the issue, fix issue.yaml, and upload it again")) from None
    if not isinstance(values, dict):
        raise InputError(Problem("issue.yaml", "it is not a list of fields", "start it with 'title: ...'"))
    manifest = Manifest(values)
    manifest.source = text
    return manifest


def manifest_from_form(original: dict, form: Mapping[str, str]) -> Manifest:
    values = Manifest(original)
    values.source = getattr(original, "source", "")
    for name in MANIFEST_FORM_FIELDS:
        text = _tidy(form.get(name, ""))
        if name == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                values[name] = date.fromisoformat(text)
                continue
            except ValueError:
                pass  # the check says what is wrong with it
        if text or name in values:
            values[name] = text
    return values


def write_manifest(values: dict) -> bytes:
    ordered = {k: values[k] for k in ("title", "subject", "preheader", "date", "slug") if k in values}
    ordered |= {k: v for k, v in values.items() if k not in ordered and k != "sections"}
    ordered["sections"] = list(values.get("sections") or [])
    return _front_text(getattr(values, "source", ""), ordered).encode()


def section_names(manifest: dict) -> list[str]:
    return [str(s) for s in manifest.get("sections") or []]


# --- YAML as people write it ------------------------------------------------------------


def _front_text(source: str, values: dict) -> str:
    """``values`` as YAML: the written text with only what changed changed, else a new text."""
    if source.strip():
        try:
            return yamledit.updated(source, values, tuple(values))
        except yamledit.Unreadable:
            pass  # the check reports what is wrong with it; the form's values are written anew
    return dump_yaml(values)


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump_yaml(values: dict) -> str:
    return yaml.dump(values, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False)
