"""What an issue is once loaded: plain, immutable values.

``content.load_issue`` makes these from a folder of section files;
``render.render_issue`` turns them into MJML, HTML, text and web pages.
Markdown is kept as authored (with where it came from) so that rendering to
HTML and to plain text both start from the same source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

SECTION_KINDS = ("letter", "teasers", "news", "figures", "image", "text")


@dataclass(frozen=True)
class Source:
    """Where a value was written: a file and a 1-based line (0 if unknown)."""

    path: Path
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


@dataclass(frozen=True)
class Colours:
    primary: str = "#005eb8"  # headings, links, header band
    accent: str = "#41b6e6"
    text: str = "#212b32"
    background: str = "#f0f4f5"  # around the email, and the footer
    surface: str = "#ffffff"  # behind the sections


# What readers with a dark colour scheme see, where their mail client asks
# (Apple Mail, iOS, Outlook apps): light text on dark grey, lighter links.
# The header band keeps the light scheme's primary colour: it is the brand.
DARK_COLOURS = Colours(primary="#8fc3f0", accent="#41b6e6", text="#e8edee", background="#0b0c0c", surface="#1d2023")


@dataclass(frozen=True)
class Publication:
    slug: str  # stable id, used in URLs and List-Id
    name: str
    from_name: str
    from_email: str
    reply_to: str
    postal_address: str  # shown in every footer
    web_base_url: str  # https://.../ where public copies live
    timezone: str = "Europe/London"
    language: str = "en-GB"
    logo: Path | None = None  # an image file on disk
    logo_alt: str = ""
    logo_dark: Path | None = None  # shown instead of logo where the reader's scheme is dark
    logo_width: int | None = None  # pixels shown; the file's own width if not set
    colours: Colours = field(default_factory=Colours)
    dark_colours: Colours = DARK_COLOURS
    why_receiving: str = ""  # "You receive this because ..."
    signup_url: str = ""  # where the public pages send a reader who wants the newsletter
    sending: object = None  # a sending_block.SendingBlock: how its mail leaves (None: the environment's way)
    source: Source | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # field -> line in the file

    def where(self, name: str) -> Source | None:
        """Where field ``name`` was written (the file's first line if it was left out)."""
        return Source(self.source.path, self.lines.get(name, 1)) if self.source else None

    @property
    def domain(self) -> str:
        """The sending domain, for Message-ID and List-Id."""
        return self.from_email.rsplit("@", 1)[-1].lower()


@dataclass(frozen=True)
class Image:
    path: Path  # file on disk
    alt: str  # "" only when decorative
    decorative: bool = False
    caption: str = ""
    link: str | None = None
    width: int | None = None  # pixels, optional
    source: Source | None = None


@dataclass(frozen=True)
class Item:
    """One teaser or news item: a heading, a short summary and a link.

    ``url`` points elsewhere; ``article`` (Markdown) is a full article body
    that the web copy publishes as its own page. Exactly one of them is set.
    """

    heading: str
    summary: str  # Markdown
    slug: str  # unique within the issue; article pages are named after it
    url: str | None = None
    article: str | None = None  # Markdown
    link_text: str = "Read more"
    image: Image | None = None
    source: Source | None = None


@dataclass(frozen=True)
class Figure:
    value: str  # "835,002"
    label: str  # "first doses"


@dataclass(frozen=True)
class Section:
    kind: str  # one of SECTION_KINDS
    id: str  # anchor, unique within the issue
    title: str = ""
    body: str = ""  # Markdown
    # letter
    author: str = ""
    role: str = ""
    signoff: str = ""
    # teasers, news
    items: tuple[Item, ...] = ()
    # figures
    figures: tuple[Figure, ...] = ()
    # image (and an optional picture on a letter)
    image: Image | None = None
    source: Source | None = None
    body_line: int = 0  # line in the file where the Markdown body starts


@dataclass(frozen=True)
class Issue:
    publication: Publication
    slug: str  # "2021-09"; unique within the publication
    title: str
    subject: str
    preheader: str
    issue_date: date
    sections: tuple[Section, ...]
    folder: Path
    source: Source | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # manifest field -> line

    def where(self, name: str) -> Source | None:
        """Where manifest field ``name`` was written (line 1 if it was left out)."""
        return Source(self.source.path, self.lines.get(name, 1)) if self.source else None

    @property
    def web_url(self) -> str:
        return f"{self.publication.web_base_url.rstrip('/')}/{self.slug}/"

    def article_url(self, item: Item) -> str:
        return f"{self.web_url}{item.slug}/"
