"""Jinja2 -> MJML -> HTML once per issue, plus the plain-text part and the web copy.

The email is compiled once with per-recipient ``%%placeholders%%`` left in
place; ``message.MessageTemplate`` fills them for each recipient. The text
part is rendered from the same Markdown (``markup.to_text``), not by
stripping the HTML. The web copy is public: its templates get no
placeholder helper at all, so they cannot leak anything personal.

A publication may carry a ``templates/`` folder beside its
``publication.yaml``; files there override the defaults of the same name.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import jinja2
from jinja2.utils import LRUCache
import mjml
import PIL.Image
from markupsafe import Markup, escape

from newsletter.authoring import markup, placeholders
from newsletter.config import Settings
from newsletter.errors import ContentError, Problem
from newsletter.authoring.issue import Image, Issue, Item, Publication

DEFAULT_TEMPLATES = Settings.templates_dir
TEXT_WIDTH = 72
# The email's content column; a logo is never shown wider than this.
CONTENT_WIDTH = 552
# After the preheader: zero-width joiners and spaces, so an inbox's preview
# line ends with the preheader instead of running on into the email's first words.
PREHEADER_FILLER = Markup("&#847;&zwnj;&nbsp;" * 60)

# The MJML 4 elements mjml-python (mrml) understands. mrml passes an unknown
# <mj-foo> through into the HTML untouched instead of warning like the JS
# compiler does, so a typo in a template would reach subscribers silently.
KNOWN_MJML_TAGS = frozenset({
    "mjml", "mj-head", "mj-body", "mj-attributes", "mj-all", "mj-class", "mj-breakpoint",
    "mj-font", "mj-html-attributes", "mj-html-attribute", "mj-selector", "mj-preview",
    "mj-style", "mj-title", "mj-include", "mj-raw", "mj-section", "mj-column", "mj-group",
    "mj-wrapper", "mj-hero", "mj-text", "mj-image", "mj-button", "mj-divider", "mj-spacer",
    "mj-table", "mj-social", "mj-social-element", "mj-navbar", "mj-navbar-link",
    "mj-accordion", "mj-accordion-element", "mj-accordion-title", "mj-accordion-text",
    "mj-carousel", "mj-carousel-image",
})
MJML_TAG = re.compile(r"<(mj-[a-z-]+|mjml)\b([^>]*)>")


@dataclass
class RenderedIssue:
    issue: Issue
    mjml: str  # the compiled source, kept for debugging and `build`
    html: str  # with per-recipient placeholders
    text: str  # with per-recipient placeholders
    web_pages: dict[str, str]  # "index.html", "<slug>/index.html" -> public HTML
    images: dict[str, Path]  # "images/<file>" -> the file on disk
    problems: list[Problem] = field(default_factory=list)  # from validating the MJML


def render_issue(issue: Issue, templates_dir: Path | None = None) -> RenderedIssue:
    """Render every part of an issue; raise ContentError on a template or MJML error."""
    env = template_environment(issue.publication, templates_dir)
    image_names = _image_names(issue)
    email_context = _email_context(issue, image_names)
    mjml_source = render_template(env, "email/layout.mjml.j2", email_context)
    problems = validate_mjml(mjml_source)
    html = main_landmark(compile_mjml(mjml_source))
    text = tidy_text(render_template(env, "text/issue.txt.j2", email_context))
    return RenderedIssue(
        issue=issue,
        mjml=mjml_source,
        html=html,
        text=text,
        web_pages=_web_pages(env, issue, image_names),
        images={name: path for path, name in image_names.items()},
        problems=problems,
    )


class CompiledTemplates(jinja2.BytecodeCache):
    """Templates compiled once per process, not once per render: each render
    has an environment of its own (its folders are the publication's), and
    parsing and compiling the templates cost about 40 ms of the sample's 50 ms
    render. Jinja keys each entry by the template's name and file and compiles
    again a file whose source has changed (its checksum), so an edited template
    is never served stale. The entries are kept in Jinja's own thread-safe LRU cache."""

    def __init__(self, capacity: int = 512):
        self._entries = LRUCache(capacity)

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._entries.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._entries[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = CompiledTemplates()  # the issue's templates and the web app's pages


def template_environment(publication: Publication, templates_dir: Path | None = None) -> jinja2.Environment:
    """Templates from ``templates_dir`` (or the publication's own folder) first, then the defaults."""
    folders = []
    if templates_dir is not None:
        folders.append(Path(templates_dir))
    elif publication.source is not None:
        own = Path(publication.source.path).parent / "templates"
        if own.is_dir():
            folders.append(own)
    folders.append(DEFAULT_TEMPLATES)
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(f)) for f in folders]),
        autoescape=jinja2.select_autoescape(["mjml.j2", "html.j2"], default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,  # an included partial ends its own last line
        bytecode_cache=COMPILED_TEMPLATES,
    )
    env.filters.update(
        markdown=lambda md: Markup(markup.to_html(md or "")),
        public_markdown=_public_markdown,
        markdown_text=lambda md: markup.to_text(md or "", width=TEXT_WIDTH).strip("\n"),
        long_date=long_date,
        lines_br=lines_br,
        wrap_text=lambda text: textwrap.fill(text, TEXT_WIDTH),
        sender_address=sender_address,
    )
    return env


def sender_address(publication: Publication) -> str:
    """The name and postal address for a footer, the name once even when the address starts with it."""
    address = publication.postal_address.strip()
    if address.casefold().startswith(publication.name.casefold()):
        return address
    return f"{publication.name}\n{address}"


def pixel_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a picture file in pixels, or None if it cannot be read as one."""
    try:
        with PIL.Image.open(path) as picture:
            return picture.size
    except (OSError, PIL.UnidentifiedImageError):
        return None


def logo_width(publication: Publication) -> int:
    """The logo's width in the email: the publication's logo_width, or the file's own width."""
    if publication.logo_width:
        return min(publication.logo_width, CONTENT_WIDTH)
    size = pixel_size(publication.logo) if publication.logo else None
    return min(size[0], CONTENT_WIDTH) if size else 200


def main_landmark(html: str) -> str:
    """Put the email's article (which MJML labels with the subject) inside a main landmark.

    Screen readers jump to "main"; without it axe reports landmark-one-main
    and region for an email opened on its own (a download, the web view).
    """
    opening = re.search(r'<div[^>]*\brole="article"', html)
    closing = html.rfind("</body>")
    if not opening or closing < 0:
        return html
    return (html[:opening.start()] + '<div role="main">' + html[opening.start():closing]
            + "</div>" + html[closing:])


def public_text(markdown_source: str, web_url: str) -> str:
    """Authored Markdown for the web copy: placeholders replaced by public values.

    An editor may greet "%%name%%" in a letter; the public page says "reader"
    (the same fallback a subscriber without a name gets) and carries no
    per-recipient link or address. Unknown tokens are left for the checks.
    """
    values = dict.fromkeys(placeholders.NAMES, "") | {"name": "reader", "web_url": web_url}
    return placeholders.PATTERN.sub(lambda m: values.get(m.group(1), m.group(0)), markdown_source)


@jinja2.pass_context
def _public_markdown(context, markdown_source: str | None) -> Markup:
    public = public_text(markdown_source or "", context["issue"].web_url)
    return Markup(markup.to_html(public))


def long_date(value: date) -> str:
    """"1 September 2021": day without a leading zero, month spelled out."""
    return f"{value.day} {value:%B %Y}"


def lines_br(text: str) -> Markup:
    """A multi-line value (a postal address) as escaped HTML with <br> between lines."""
    lines = [escape(line.strip()) for line in text.strip().splitlines() if line.strip()]
    return Markup("<br>").join(lines)


def tidy_text(text: str) -> str:
    """No trailing spaces, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return tidy.strip("\n") + "\n"


def _email_context(issue: Issue, image_names: dict[Path, str]) -> dict:
    def image_url(path: Path) -> str:
        # Absolute: the build copies the files next to the issue's web copy.
        return issue.web_url + image_names[Path(path)]

    return {
        **_common_context(issue),
        "dark": issue.publication.dark_colours,
        "logo_width": logo_width(issue.publication),
        "preheader_filler": PREHEADER_FILLER,
        "placeholder": lambda name: Markup(placeholders.token(name)),
        "image_url": image_url,
        "item_url": lambda item: item.url or issue.article_url(item),
    }


def _common_context(issue: Issue) -> dict:
    return {"issue": issue, "publication": issue.publication, "colours": issue.publication.colours}


def _web_pages(env: jinja2.Environment, issue: Issue, image_names: dict[Path, str]) -> dict[str, str]:
    pages = {"index.html": render_template(env, "web/issue.html.j2", _web_context(issue, image_names, root=""))}
    for item in _article_items(issue):
        context = _web_context(issue, image_names, root="../") | {"item": item}
        pages[f"{item.slug}/index.html"] = render_template(env, "web/article.html.j2", context)
    return pages


def _web_context(issue: Issue, image_names: dict[Path, str], root: str) -> dict:
    """Relative links only, so the copy works from any host and from disk."""
    logo = issue.publication.logo
    return {
        **_common_context(issue),
        "root": root or "./",
        "archive_url": root + "../",
        "logo_url": root + image_names[Path(logo)] if logo else "",
        "image_url": lambda path: root + image_names[Path(path)],
        "item_url": lambda item: item.url or f"{root}{item.slug}/",
    }


def _article_items(issue: Issue) -> list[Item]:
    return [item for section in issue.sections for item in section.items if item.article]


def _issue_images(issue: Issue) -> list[Image]:
    images = []
    for section in issue.sections:
        images += [section.image] if section.image else []
        images += [item.image for item in section.items if item.image]
    return images


def _image_names(issue: Issue) -> dict[Path, str]:
    """Each image file (and the logo) -> "images/<name>", unique within the issue."""
    paths = [image.path for image in _issue_images(issue)]
    logos = [issue.publication.logo, issue.publication.logo_dark]
    paths[:0] = [logo for logo in logos if logo]
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in map(Path, paths):
        if path in names:
            continue
        name, n = path.name, 1
        while name in taken:  # two folders with a "photo.jpg" each
            n += 1
            name = f"{path.stem}-{n}{path.suffix}"
        taken.add(name)
        names[path] = f"images/{name}"
    return names


def render_template(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name or name}:{exc.lineno}"
        raise ContentError(Problem(where, f"template syntax error: {exc.message}", "fix the template")) from None
    except jinja2.TemplateNotFound as exc:
        raise ContentError(Problem(
            f"template {exc.name}", "template not found",
            "check the section kind, or add the template to the publication's templates/ folder",
        )) from None
    except (jinja2.UndefinedError, KeyError) as exc:
        # StrictUndefined, or a helper given a bad name: the template is at fault.
        raise ContentError(Problem(_template_line(exc) or f"template {name}", str(exc).strip("'\""),
                                 "fix the template: use only the variables it is given")) from None


def _template_line(exc: BaseException) -> str:
    """"<template file>:<line>" of the innermost template frame in the traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def compile_mjml(source: str) -> str:
    """The one call to the MJML compiler; its errors become a ContentError."""
    try:
        return mjml.mjml2html(source, disable_comments=True)
    except Exception as exc:  # noqa: BLE001 - mrml raises plain ValueErrors with a message
        raise ContentError(Problem("email.mjml", f"MJML does not compile: {exc}",
                                 "fix the email templates (see email.mjml from `newsletter build`)")) from None


def validate_mjml(source: str) -> list[Problem]:
    """Cheap checks the JS compiler would warn about and mrml does not.

    - every <mj-...> tag is one MJML knows (mrml copies unknown ones into the HTML);
    - every <mj-image> has an alt attribute (screen readers read the file name otherwise);
    - <mjml> carries a lang attribute (screen readers pick their voice by it).
    """
    problems = []
    body_start = source.find("<mj-body")  # defaults in <mj-attributes> need no alt
    for match in MJML_TAG.finditer(source):
        tag, attributes = match.group(1), match.group(2)
        where = f"email.mjml:{source.count(chr(10), 0, match.start()) + 1}"
        if tag not in KNOWN_MJML_TAGS:
            problems.append(Problem(where, f"unknown MJML element <{tag}>", "fix the tag name in the email templates"))
        elif tag == "mj-image" and match.start() > body_start and not re.search(r"\balt=", attributes):
            problems.append(Problem(where, "<mj-image> without an alt attribute", 'add alt="..." (alt="" if decorative)'))
        elif tag == "mjml" and not re.search(r"\blang=", attributes):
            problems.append(Problem(where, "<mjml> without a lang attribute", "add lang=\"{{ publication.language }}\""))
    return problems
