"""A publication's publication.yaml as a form: its name, sender, colours, logos,
footer, postal address and time zone.

The console keeps a publication's folder in the database (``drafts.store_publication_files``).
A save lays that folder out in a temporary folder, writes the new
publication.yaml there (a temporary file renamed over the old, so it is never
half-written), and reads it with the loader ``newsletter check`` uses
(``authoring.content.load_publication``). Only a file the loader accepts is
stored, with the publication's row, in one transaction; otherwise every
problem comes back under the form field it is about. Fields the form does not
show (``sending:``, dark colours, comments) are kept as written (``yamledit``).
Secrets are never in the file: the sending block names environment variables.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.authoring.colours import BAND, PAIRS, WHITE, contrast, low_contrast
from newsletter.authoring.content import PUBLICATION_FILE, RESERVED_PUBLICATION_SLUGS, load_publication
from newsletter.authoring.issue import Colours, Publication
from newsletter.authoring.yamlsource import LineMap, parse_yaml
from newsletter.console import drafts, yamledit
from newsletter.console.images import check_image
from newsletter.errors import InputError, Problem
from newsletter.store.models import PublicationRow
from newsletter.store.publications import sync_publication

# (field, label, hint) in the order the form shows them.
TEXT_FIELDS = (
    ("name", "Name", "As readers know it: in the email's header band and in every List-Id."),
    ("from_name", "Sender's name", "The name inboxes show as the sender. Left empty: the name above."),
    ("from_email", "Sender's address", "An address of a domain whose mail this install may send (SPF and DKIM)."),
    ("reply_to", "Replies go to", "Left empty: the sender's address."),
    ("postal_address", "Postal address", "Shown in every email's footer, as the law on marketing email asks."),
    ("why_receiving", "Footer: why readers receive it", "A sentence or two at the foot of every email."),
    ("web_base_url", "Web address of the published issues", "https://... where each issue's web copy is published."),
    ("timezone", "Time zone", "Times to schedule are given in it."),
    ("language", "Language", "A language tag such as en-GB or cy."),
    ("logo_alt", "The logo's description (alt text)", "Read out in place of the logo; usually the name."),
    ("logo_width", "The logo's width in pixels", "Left empty: the picture's own width."),
)
LONG_FIELDS = {"postal_address", "why_receiving"}
COLOUR_FIELDS = tuple((name, f"colours-{name}") for name in asdict(Colours()))
COLOUR_LABELS = {"primary": "Main colour (header band, links, headings)", "accent": "Accent",
                 "text": "Text", "background": "Around the email and behind the footer",
                 "surface": "Behind the sections"}
LOGO_FIELDS = {"logo": "Logo", "logo_dark": "Logo on a dark background (dark mode)"}
HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


@dataclass
class Saved:
    row: PublicationRow
    publication: Publication
    created: bool


class FormProblems(InputError):
    """The form's problems, each under its field (``errors``: field -> [text])."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__([Problem(field, text) for field, texts in errors.items() for text in texts])


# --- reading ---------------------------------------------------------------------------------------


def form_values(text: str) -> dict[str, str]:
    """What the form shows for a publication.yaml."""
    values = yaml.safe_load(text) or {}
    shown = {name: _shown(values.get(name)) for name, _label, _hint in TEXT_FIELDS}
    shown["slug"] = _shown(values.get("slug"))
    colours = values.get("colours") if isinstance(values.get("colours"), dict) else {}
    defaults = asdict(Colours())
    for name, field in COLOUR_FIELDS:
        shown[field] = _shown(colours.get(name)) or defaults[name]
    for name in LOGO_FIELDS:
        shown[name] = _shown(values.get(name))
    return shown


def _shown(value) -> str:
    return "" if value is None else str(value).strip()


def new_values() -> dict[str, str]:
    colours = {field: value for (name, field), value in zip(COLOUR_FIELDS, asdict(Colours()).values())}
    return {"timezone": "Europe/London", "language": "en-GB", **colours}


# --- writing ----------------------------------------------------------------------------------------


def file_text(original: str, form: dict[str, str], logos: dict[str, str]) -> str:
    """publication.yaml with the form's values; ``logos`` maps logo / logo_dark to a new file name."""
    values = yaml.safe_load(original) or {} if original.strip() else {}
    if not isinstance(values, dict):
        values = {}
    values = dict(values)
    if not original.strip():
        values["slug"] = _tidy(form.get("slug", ""))
    for name, _label, _hint in TEXT_FIELDS:
        text = _tidy(form.get(name, ""))
        if name == "logo_width" and text.isdigit():
            values[name] = int(text)
        elif text:
            values[name] = text
        else:
            values.pop(name, None)
    colours = dict(values.get("colours") or {}) if isinstance(values.get("colours"), dict) else {}
    defaults = asdict(Colours())
    for name, field in COLOUR_FIELDS:
        text = _tidy(form.get(field, ""))
        if name not in colours and text.lower() == defaults[name]:
            continue  # the form shows the default; the file need not say it
        if text:
            colours[name] = text
        else:
            colours.pop(name, None)
    if colours:
        values["colours"] = colours
    else:
        values.pop("colours", None)
    for name, file_name in logos.items():
        values[name] = file_name
    order = ("slug", "name", "from_name", "from_email", "reply_to", "postal_address", "web_base_url", "signup_url",
             "timezone", "language", "logo", "logo_alt", "logo_dark", "logo_width", "colours", "why_receiving")
    return yamledit.updated(original, values, order)


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip()


def save(session: Session, row: PublicationRow | None, form: dict[str, str],
         uploads: dict[str, tuple[str, bytes]], *, store: bool = True) -> Saved:
    """Check the form as ``newsletter check`` would read the file, and (``store``) keep it.
    ``row`` None makes a new publication. Raises FormProblems; nothing is stored then."""
    errors: dict[str, list[str]] = {}
    files = drafts.publication_files(session, row.id) if row is not None else {}
    original = files.get(PUBLICATION_FILE, b"").decode("utf-8-sig")
    for name, field in COLOUR_FIELDS:
        value = _tidy(form.get(field, ""))
        if value and not HEX.match(value):
            errors.setdefault(field, []).append(f"{value!r} is not a colour: write it like #005eb8")
    logos = {}
    for name, (file_name, data) in uploads.items():
        file_name = PurePosixPath(file_name.replace("\\", "/")).name
        try:
            check_image(file_name, data)
        except InputError as exc:
            errors.setdefault(name, []).extend(f"{p.message} ({p.fix})" for p in exc.problems)
            continue
        logos[name] = file_name
        files[file_name] = data
    if row is None:
        slug = _tidy(form.get("slug", ""))
        taken = session.scalar(select(PublicationRow.id).where(PublicationRow.slug == slug))
        if not slug:
            errors.setdefault("slug", []).append("a publication needs a web name (lower-case letters, digits and "
                                                 "hyphens, e.g. staff-news)")
        elif taken is not None or slug in RESERVED_PUBLICATION_SLUGS:
            errors.setdefault("slug", []).append(f"{slug!r} is taken: choose another web name")
    # The loader reads the rest even so, so that every problem is shown at once.
    readable = {k: v for k, v in form.items() if k not in errors}
    text = file_text(original, readable, logos)
    with tempfile.TemporaryDirectory(prefix="publication-") as temp:
        folder = Path(temp) / (row.slug if row is not None else "new")
        for name, data in files.items():
            _write(folder, name, data)
        _write(folder, PUBLICATION_FILE, text.encode())
        try:
            publication = load_publication(folder / PUBLICATION_FILE)
        except InputError as exc:
            for field, texts in _at_fields(exc.problems, text, folder).items():
                errors.setdefault(field, []).extend(texts)
        if errors:
            raise FormProblems(errors)
        if not store:
            return Saved(row, publication, row is None)
        created = row is None
        row = sync_publication(session, publication)
        drafts.store_publication_files(session, row, folder)
    return Saved(row, publication, created)


def _write(folder: Path, name: str, data: bytes) -> None:
    """Write a file whole: a temporary file beside it, renamed over it."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise InputError(Problem(name, "the file name leads outside its folder", "use a plain file name"))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".saving-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def _at_fields(problems: list[Problem], text: str, folder: Path) -> dict[str, list[str]]:
    """The loader's problems under the form field whose line they name; the rest under "form"."""
    lines: dict[int, str] = {}
    parsed = parse_yaml(text, Path(PUBLICATION_FILE), 1, [])
    if isinstance(parsed, LineMap):
        for key, line in parsed.key_lines.items():
            lines[line] = str(key)
        if isinstance(parsed.get("colours"), LineMap):
            for key, line in parsed["colours"].key_lines.items():
                lines[line] = f"colours-{key}"
    known = {name for name, _l, _h in TEXT_FIELDS} | {f for _n, f in COLOUR_FIELDS} | set(LOGO_FIELDS) | {"slug"}
    errors: dict[str, list[str]] = {}
    for problem in problems:
        if not problem.is_error:
            continue
        match = re.search(r":(\d+)$", problem.where)
        named = re.search(r"`([a-z_]+)`", problem.message)  # "has no `name`" is said at the file's top
        field = named[1] if named and named[1] in known else lines.get(int(match[1])) if match else None
        if re.search(r"has no `[a-z_]+`", problem.message):
            errors.setdefault(field if field in known else "form", []).append("fill this in: it is needed")
            continue
        message = problem.message.replace(f"`{field}`", "it") if field else problem.message  # beside its field
        text_shown = (message + (f" ({problem.fix})" if problem.fix else "")).replace(f"{folder}/", "")
        text_shown = text_shown.replace(str(folder), "the publication's folder")
        errors.setdefault(field if field in known else "form", []).append(text_shown)
    return errors


# --- the contrast check ----------------------------------------------------------------------------


def contrast_rows(publication: Publication) -> list[dict]:
    """Every pair of colours the email draws, its ratio and whether it passes WCAG AA."""
    failing = {(f.scheme, f.pair.what) for f in low_contrast(publication)}
    rows = []
    for scheme, colours in (("light", publication.colours), ("dark", publication.dark_colours)):
        for pair in PAIRS:
            rows.append(_row(scheme, pair, colours, failing))
    rows.append(_row("both", BAND, publication.colours, failing))
    return rows


def _row(scheme: str, pair, colours: Colours, failing) -> dict:
    foreground = WHITE if pair.foreground == "white" else getattr(colours, pair.foreground)
    background = getattr(colours, pair.background)
    return {"scheme": scheme, "what": pair.what, "foreground": foreground, "background": background,
            "fg_field": pair.foreground, "bg_field": pair.background,
            "ratio": contrast(foreground, background), "ok": (scheme, pair.what) not in failing}


def pairs_spec() -> list[dict]:
    """The pairs as the page's script measures them while someone types."""
    spec = [{"scheme": "light", "what": p.what, "fg": p.foreground, "bg": p.background} for p in PAIRS]
    spec += [{"scheme": "dark", "what": p.what, "fg": p.foreground, "bg": p.background} for p in PAIRS]
    spec.append({"scheme": "both", "what": BAND.what, "fg": BAND.foreground, "bg": BAND.background})
    return spec

