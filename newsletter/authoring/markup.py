"""Markdown as editors write it, turned into email-safe HTML and plain text.

Both renderings start from the same markdown-it token stream, so the HTML
part and the text part of a message always say the same thing. Raw HTML is
allowed in the source; nh3 then keeps only an allow-list of tags, attributes
and link schemes. ``unsafe_markup`` reports what that sanitizing would drop,
with the line it is on, so a check can tell the editor before sending.
"""

from __future__ import annotations

import re
import textwrap
from functools import lru_cache
from html.parser import HTMLParser

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

# What survives sanitizing. Nothing here can run code, load a style sheet or
# open a window; everything renders in the common email clients.
ALLOWED_TAGS = frozenset({
    "p", "br", "a", "strong", "b", "em", "i", "u", "s", "del", "code", "pre",
    "ul", "ol", "li", "h2", "h3", "h4", "blockquote", "img", "hr", "sub", "sup",
})
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
}
URL_ATTRIBUTES = frozenset({"href", "src"})
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
# Removed together with everything inside them, not just the tags.
REMOVED_WITH_CONTENT = frozenset({"script", "style", "template", "iframe", "object", "svg", "math"})

# The section title is the top heading in an issue, so headings in a body
# run from h2 to h4: "#" is read as "##" and anything deeper than h4 as h4.
HEADING_LEVELS = (2, 4)

_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True}).enable("strikethrough")
    # markdown-it silently leaves "[x](javascript:...)" as plain text. Letting
    # every link through to the sanitizer means one place decides, and
    # unsafe_markup can report the link instead of it vanishing unexplained.
    md.validateLink = lambda url: True
    return md


def _tokens(markdown: str) -> list[Token]:
    tokens = _parser().parse(markdown)
    low, high = HEADING_LEVELS
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            level = min(max(int(token.tag[1]), low), high)
            token.tag = f"h{level}"
    return tokens


def to_html(markdown: str) -> str:
    """Markdown (raw HTML allowed) to sanitized, email-safe HTML."""
    md = _parser()
    raw = md.renderer.render(_tokens(markdown), md.options, {})
    return nh3.clean(
        raw,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(REMOVED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(ALLOWED_SCHEMES),
        link_rel=None,
        strip_comments=True,
    )


# --- what the sanitizer would remove -------------------------------------------


def url_scheme(url: str) -> str:
    """The scheme of a URL as a browser reads it ("" when relative)."""
    # Browsers ignore whitespace and control characters inside a scheme,
    # so "java\tscript:" is still javascript.
    match = _SCHEME.match(_INVISIBLE.sub("", url).lower())
    return match.group(1) if match else ""


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _unsafe_url(tag: str, attribute: str, url: str | None) -> str | None:
    scheme = url_scheme(url or "")
    if not scheme or scheme in ALLOWED_SCHEMES:
        return None
    what = "image" if attribute == "src" else "link"
    return f"{_article(scheme)} {scheme}: {what}"


def _unsafe_tag(tag: str, attrs: list[tuple[str, str | None]]) -> list[str]:
    if tag in REMOVED_WITH_CONTENT:
        return [f"a <{tag}> element"]
    # A tag outside the list loses its attributes with it; naming them too
    # tells the editor what the tag was meant to do ("an onclick attribute").
    found = [] if tag in ALLOWED_TAGS else [f"a <{tag}> element"]
    allowed = ALLOWED_ATTRIBUTES.get(tag, set())
    for name, value in attrs:
        if name not in allowed:
            found.append(f"{_article(name)} {name} attribute")
        elif name in URL_ATTRIBUTES:
            problem = _unsafe_url(tag, name, value)
            if problem:
                found.append(problem)
    return found


class _TagScanner(HTMLParser):
    """Collects (line within the fragment, tag, attributes) for each start tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((self.getpos()[0] - 1, tag, attrs))

    handle_startendtag = handle_starttag


def _tags(fragment: str, first_line: int) -> list[tuple[int, str, list[tuple[str, str | None]]]]:
    scanner = _TagScanner()
    scanner.feed(fragment)
    scanner.close()
    return [(first_line + line, tag, attrs) for line, tag, attrs in scanner.found]


def _inline_pieces(inline: Token) -> list[tuple[int, Token]]:
    pieces = []
    line = inline.map[0] if inline.map else 0
    for child in inline.children or []:
        if child.type in ("html_inline", "link_open", "image"):
            pieces.append((line, child))
        # Inline tokens carry no line numbers of their own: count the breaks.
        if child.type in ("softbreak", "hardbreak"):
            line += 1
        elif child.type == "html_inline":
            line += child.content.count("\n")
    return pieces


def _tags_by_line(markdown: str) -> list[tuple[int, str, list[tuple[str, str | None]], bool]]:
    """(0-based line, tag, attributes, written as HTML) for every tag, link and picture in ``markdown``.

    A Markdown link is an <a href>, a Markdown picture an <img src alt>: the
    tags they become, on the line they were written.
    """
    found = []
    for token in _tokens(markdown):
        if token.type == "html_block" and token.map:
            found += [(line, tag, attrs, True) for line, tag, attrs in _tags(token.content, token.map[0])]
        elif token.type == "inline":
            for line, child in _inline_pieces(token):
                if child.type == "html_inline":
                    found += [(at, tag, attrs, True) for at, tag, attrs in _tags(child.content, line)]
                elif child.type == "link_open":
                    found.append((line, "a", [("href", child.attrGet("href"))], False))
                else:
                    found.append((line, "img", [("src", child.attrGet("src")), ("alt", child.content)], False))
    return found


def unsafe_markup(markdown: str) -> list[tuple[int, str]]:
    """What sanitizing would remove: (0-based line in ``markdown``, description).

    Descriptions read like "a <script> element", "an onclick attribute" or
    "a javascript: link". HTML comments are dropped too but not reported:
    they are the editor's own notes.
    """
    found: list[tuple[int, str]] = []
    for line, tag, attrs, raw in _tags_by_line(markdown):
        if raw:
            found += [(line, what) for what in _unsafe_tag(tag, attrs)]
        else:
            attribute = "src" if tag == "img" else "href"
            problem = _unsafe_url(tag, attribute, dict(attrs).get(attribute))
            found += [(line, problem)] if problem else []
    return sorted(found, key=lambda pair: pair[0])


def references(markdown: str) -> list[tuple[int, str, str, dict[str, str]]]:
    """(0-based line, "a" or "img", URL, attributes) for each link and picture, in order.

    What the checks use to name the line of a link or a picture that the
    email would carry: the exact tag, not the first line that happens to
    contain the same text.
    """
    found = []
    for line, tag, attrs, _raw in _tags_by_line(markdown):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in attributes:
            found.append((line, "a", attributes["href"], attributes))
        elif tag == "img":
            found.append((line, "img", attributes.get("src", ""), attributes))
    return found


# --- plain text ----------------------------------------------------------------


def to_text(markdown: str, width: int = 72) -> str:
    """A readable plain-text rendering, made from the same tokens as the HTML."""
    root = SyntaxTreeNode(_tokens(markdown))
    return "\n".join(_blocks(root.children, width, tight=False)).strip("\n")


def _blocks(nodes, width: int, tight: bool) -> list[str]:
    """Lines for a run of blocks, a blank line between them unless tight."""
    lines: list[str] = []
    for node in nodes:
        block = _block(node, width)
        if not block:
            continue
        if lines and not tight:
            lines.append("")
        lines.extend(block)
    return lines


def _block(node: SyntaxTreeNode, width: int) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline_text(node), width)
    if kind == "heading":
        return _heading(node, width)
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, width)
    if kind == "blockquote":
        inner = _blocks(node.children, max(width - 2, 20), tight=False)
        return [f"> {line}".rstrip() for line in inner]
    if kind in ("fence", "code_block"):
        return ["    " + line for line in node.content.rstrip("\n").split("\n")]
    if kind == "hr":
        return ["-" * min(width, 20)]
    if kind == "html_block":
        return _wrap(_html_text(node.content), width)
    return _blocks(node.children, width, tight=False)


def _heading(node: SyntaxTreeNode, width: int) -> list[str]:
    lines = _wrap(_inline_text(node), width)
    if not lines:
        return []
    underline = "=" if node.tag == "h2" else "-"
    return lines + [underline * max(len(line) for line in lines)]


def _list(node: SyntaxTreeNode, width: int) -> list[str]:
    ordered = node.type == "ordered_list"
    number = int(node.attrs.get("start", 1)) if ordered else 0
    tight = all(p.hidden for item in node.children for p in item.children if p.type == "paragraph")
    lines: list[str] = []
    for item in node.children:
        marker = f"{number}. " if ordered else "- "
        number += 1
        indent = " " * len(marker)
        body = _blocks(item.children, max(width - len(marker), 20), tight=tight)
        if lines and not tight:
            lines.append("")
        for i, line in enumerate(body or [""]):
            prefix = marker if i == 0 else indent
            lines.append((prefix + line).rstrip())
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """Wrap each hard-broken line; long URLs stay whole rather than split."""
    lines: list[str] = []
    for part in text.split("\n"):
        wrapped = textwrap.wrap(
            part, width=width, break_long_words=False, break_on_hyphens=False
        )
        lines.extend(wrapped or ([""] if lines else []))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _inline_text(node: SyntaxTreeNode) -> str:
    """The text of a paragraph or heading: emphasis dropped, links spelled out."""
    inline = node.children[0] if node.children else None
    return _inline_children(inline.children if inline else [])


def _inline_children(nodes) -> str:
    return "".join(_inline(child) for child in nodes)


def _inline(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "text" or kind == "code_inline":
        return node.content
    if kind == "softbreak":
        return " "
    if kind == "hardbreak":
        return "\n"
    if kind == "link":
        return _link_text(_inline_children(node.children), node.attrs.get("href", ""))
    if kind == "image":
        alt = _inline_children(node.children)
        return f"[{alt}]" if alt else ""
    if kind == "html_inline":
        return "\n" if re.match(r"<br\s*/?>", node.content, re.I) else ""
    return _inline_children(node.children)


def _link_text(text: str, href: str) -> str:
    if url_scheme(href) not in ALLOWED_SCHEMES:
        # Unsafe links are dropped from the HTML; relative ones lead nowhere
        # from a mail client. Either way the reader only needs the words.
        return text
    shown = href.removeprefix("mailto:")
    if not text.strip():
        return shown
    if text.strip() in (href, shown):
        return text
    return f"{text} ({shown})"


class _TextOfHtml(HTMLParser):
    """The readable text of a raw HTML block, without scripts or styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in REMOVED_WITH_CONTENT:
            self._skipping += 1
        elif tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in REMOVED_WITH_CONTENT and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def _html_text(fragment: str) -> str:
    parser = _TextOfHtml()
    parser.feed(fragment)
    parser.close()
    lines = ("".join(parser.parts)).split("\n")
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())
