"""Each section kind's fields: letters, teasers, news, figures, images, text.

``KIND_READERS`` maps a section kind to the function that reads its own
fields (items, figures, images) into the values ``issue.Section`` holds;
``check_body`` says whether the kind needs the Markdown body.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.errors import Problem
from newsletter.authoring.issue import Figure, Image, Item, Source
from newsletter.authoring.yamlsource import LineMap, location
from newsletter.authoring.fields import Fields, checked_slug, https_url, image_file, slugify

# The fields each section kind reads, beyond kind, id and title.
KIND_FIELDS = {
    "letter": ("author", "role", "signoff", "image"),
    "teasers": ("items",),
    "news": ("items",),
    "figures": ("figures",),
    "image": ("src", "alt", "decorative", "caption", "link", "width"),
    "text": (),
}
COMMON_FIELDS = ("kind", "id", "title")
ITEM_FIELDS = ("heading", "summary", "url", "article", "link_text", "image", "slug")
IMAGE_FIELDS = ("src", "alt", "decorative", "caption", "link", "width")


def _image(fields: Fields, folder: Path) -> Image | None:
    """An image from the fields src, alt or decorative, caption, link, width."""
    path = image_file(fields, "src", folder)
    if not fields.has("src"):
        fields.problem(None, f"{fields.what} has no `src`", "add `src:` with the image file name, relative to the issue folder",
                       about="src")
    decorative = fields.flag("decorative")
    alt = fields.text("alt")
    if decorative and alt:
        fields.problem("decorative", "an image is either described by `alt` or `decorative: true`, not both",
                       "keep `alt` if the picture says something; keep `decorative` if it is only ornament")
    elif not decorative and not alt and "alt" not in fields.values:
        fields.problem(None, f"{fields.what} has no `alt` text",
                       "add `alt:` saying what the picture shows, for people who cannot see it; "
                       "or `decorative: true` if it is only ornament", about="alt")
    elif not decorative and not alt:
        fields.problem("alt", "`alt` is empty", "say what the picture shows, or write `decorative: true` instead")
    link = https_url(fields, "link")
    width = fields.number("width")
    if path is None:
        return None
    return Image(path=path, alt="" if decorative else alt, decorative=decorative, caption=fields.text("caption"),
                 link=link, width=width, source=fields.source("src"))


def _nested_image(parent: Fields, key: str, folder: Path) -> Image | None:
    values = parent.mapping(key)
    if values is None:
        return None
    fields = Fields(values, parent.path, f"`{key}`", parent.problems, IMAGE_FIELDS)
    fields.check_unknown()
    return _image(fields, folder)


# --- items and figures ------------------------------------------------------------


def _item(values: object, line: int, number: int, parent: Fields, folder: Path) -> Item | None:
    what = f"item {number} of `items`"
    if not isinstance(values, LineMap):
        parent.problems.append(Problem(location(parent.path, line), f"{what} should be a group of fields",
                                       "start it with '- heading: ...' and indent its other fields under it"))
        return None
    fields = Fields(values, parent.path, what, parent.problems, ITEM_FIELDS)
    fields.check_unknown()
    heading = fields.text("heading", required=True)
    summary = fields.text("summary", required=True)
    url = https_url(fields, "url")
    article = fields.text("article")
    if fields.has("url") == fields.has("article"):
        both = fields.has("url")
        fields.problem(None, f"{what} has {'both `url` and `article`' if both else 'neither `url` nor `article`'}",
                       "give exactly one: `url:` for a page elsewhere, or `article:` with the full text to publish")
    image = _nested_image(fields, "image", folder)
    slug = checked_slug(fields, "slug", default=slugify(heading) or f"item-{number}")
    return Item(heading=heading, summary=summary, slug=slug, url=url, article=article or None,
                link_text=fields.text("link_text", default="Read more"), image=image, source=Source(parent.path, line))


def _items(fields: Fields, folder: Path) -> dict:
    items = [_item(values, line, n, fields, folder)
             for n, (values, line) in enumerate(fields.entries("items", required=True), start=1)]
    return {"items": tuple(item for item in items if item is not None)}


def _figures(fields: Fields, folder: Path) -> dict:
    figures = []
    for n, (values, line) in enumerate(fields.entries("figures", required=True), start=1):
        if not isinstance(values, LineMap):
            fields.problems.append(Problem(location(fields.path, line), f"figure {n} should have a `value` and a `label`",
                                           "write it as '- value: \"835,002\"' with 'label: first doses' below it"))
            continue
        figure = Fields(values, fields.path, f"figure {n}", fields.problems, ("value", "label"))
        figure.check_unknown()
        figures.append(Figure(value=figure.text("value", required=True), label=figure.text("label", required=True)))
    return {"figures": tuple(figures)}


# --- sections ----------------------------------------------------------------------


def _letter(fields: Fields, folder: Path) -> dict:
    return {
        "author": fields.text("author", required=True),
        "role": fields.text("role"),
        "signoff": fields.text("signoff"),
        "image": _nested_image(fields, "image", folder),
    }


def _image_section(fields: Fields, folder: Path) -> dict:
    return {"image": _image(fields, folder)}


KIND_READERS = {
    "letter": _letter,
    "teasers": _items,
    "news": _items,
    "figures": _figures,
    "image": _image_section,
    "text": lambda fields, folder: {},
}


def check_body(fields: Fields, kind: str, body: str, body_line: int) -> None:
    where = location(fields.path, body_line)
    if kind == "letter" and not body:
        fields.problems.append(Problem(where, "the letter has no text", "write the letter below the closing '---'"))
    elif kind == "text" and not body and not fields.has("title"):
        fields.problems.append(Problem(where, "this text section is empty", "write its text below the closing '---'"))
    elif kind == "image" and body:
        fields.problems.append(Problem(where, "an image section has no text of its own",
                                       "put the words in `caption:`, or move them to a text section"))
