"""Pre-send checks: what would make an issue fail its readers, found before anyone gets it.

``check_issue`` runs the same checks for ``newsletter check`` and
``newsletter build``. Each Problem names the file and line (or the field)
and says what to do; errors stop a build, warnings are printed.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.authoring import counted_links
from newsletter.authoring import markup, placeholders
from newsletter.authoring.colours import low_contrast
from newsletter.errors import Problem
from newsletter.authoring.issue import Image, Issue, Publication, Section
from newsletter.authoring.render import RenderedIssue, logo_width, pixel_size

# Gmail shows "[Message clipped]" and hides the rest, footer and unsubscribe
# link included, once the HTML passes about 102 KB.
GMAIL_CLIP_BYTES = 102 * 1024
CLIP_WARNING_BYTES = 90 * 1024

# Phones show roughly the first 30-60 characters of a subject; longer ones
# still work but are cut. Past 150 no inbox shows the rest at all.
SUBJECT_WARN_LENGTH = 60
SUBJECT_MAX_LENGTH = 150
# Inboxes show about 40-140 characters of preheader after the subject.
PREHEADER_WARN_LENGTH = 140

# Longest plausible values (the database column sizes for name and email; a
# long signed token in the links), so the size check holds for every reader.
WORST_CASE_VALUES = {
    "name": "W" * 200,
    "email": "w" * 308 + "@example.com",
    "unsubscribe_url": "https://newsletter.example.org/unsubscribe/" + "t" * 300,
    "preferences_url": "https://newsletter.example.org/preferences/" + "t" * 300,
    "web_url": "https://newsletter.example.org/" + "p" * 200 + "/",
    "click_ref": "n" * 8 + "." + "t" * 6 + "." + "s" * 7 + "." + "h" * 11,  # per_person's, the longest
}
# Anything an editor may have meant as a placeholder, even a mistyped one.
LOOSE_PLACEHOLDER = re.compile(r"%%\s*([^%\s<>\"']{1,40}?)\s*%%|%25%25[^%\s]{1,40}%25%25")
# Link schemes a reader can follow from an email without a browser warning.
ALLOWED_NON_HTTPS = ("mailto", "tel")


def check_issue(issue: Issue, rendered: RenderedIssue) -> list[Problem]:
    """Every problem found, errors and warnings, in a stable order."""
    links = html_links(rendered.html)
    return [
        *rendered.problems,  # MJML validation
        *check_subject(issue),
        *check_colours(issue.publication),
        *check_logo(issue.publication),
        *check_size(html_as_sent(issue, rendered)),
        *check_images(issue, links),
        *check_links(issue, links),
        *check_placeholders(issue, rendered),
        *check_web_copy(issue, rendered),
        *check_markup(issue),
    ]


def personalise_worst_case(html: str) -> str:
    """The HTML as the reader with the longest values gets it; unknown tokens stay."""

    class Values(dict):
        def __missing__(self, key):
            return f"%%{key}%%"

    return placeholders.fill(html, Values(WORST_CASE_VALUES), escape_html=True)


def html_as_sent(issue: Issue, rendered: RenderedIssue) -> str:
    """The HTML as a send makes it: its outside links counted when the publication counts
    clicks (``sending.clicks``), which makes every link longer."""
    block = issue.publication.sending
    if not (block and getattr(block, "clicks", "")):
        return rendered.html
    html, _, _ = counted_links.rewrite(rendered.html, rendered.text, keys=("only-for-its-length",),
                                       base_url=block.base_url or "https://newsletter.example.org", send_id=10**9)
    return html


def check_size(html: str) -> list[Problem]:
    filled = personalise_worst_case(html)
    size = len(filled.encode("utf-8"))
    problems = []
    kb = f"{size / 1024:.0f} KB"
    fix = "shorten the issue or move long articles to the web copy"
    if size > GMAIL_CLIP_BYTES:
        problems.append(Problem("email HTML", f"{kb} after personalisation; Gmail clips messages over 102 KB", fix))
    elif size > CLIP_WARNING_BYTES:
        problems.append(Problem("email HTML", f"{kb} after personalisation; Gmail clips at 102 KB", fix, "warning"))
    at = filled.find(WORST_CASE_VALUES["unsubscribe_url"])
    if at >= 0 and len(filled[:at].encode("utf-8")) > GMAIL_CLIP_BYTES:
        problems.append(Problem("email HTML", "the unsubscribe link is past Gmail's clip point; Gmail readers cannot see it", fix))
    return problems


def check_subject(issue: Issue) -> list[Problem]:
    problems = []
    subject, preheader = issue.subject.strip(), issue.preheader.strip()
    if not subject:
        problems.append(Problem(_field(issue, "subject"), "the subject is empty", "write a subject line"))
    elif len(subject) > SUBJECT_MAX_LENGTH:
        problems.append(Problem(_field(issue, "subject"), f"the subject is {len(subject)} characters; no inbox shows more than about {SUBJECT_MAX_LENGTH}",
                                f"keep it under {SUBJECT_WARN_LENGTH} characters"))
    elif len(subject) > SUBJECT_WARN_LENGTH:
        problems.append(Problem(_field(issue, "subject"), f"the subject is {len(subject)} characters; phones show about the first {SUBJECT_WARN_LENGTH}",
                                "put the point first, or shorten it", "warning"))
    if not preheader:
        problems.append(Problem(_field(issue, "preheader"), "the preheader is empty; inboxes would show the email's first words instead",
                                "write a sentence that follows on from the subject"))
    elif len(preheader) > PREHEADER_WARN_LENGTH:
        problems.append(Problem(_field(issue, "preheader"), f"the preheader is {len(preheader)} characters; inboxes show about {PREHEADER_WARN_LENGTH}",
                                "shorten it", "warning"))
    return problems


def check_colours(publication: Publication) -> list[Problem]:
    """Text and background pairs that miss WCAG AA in the light or the dark scheme."""
    problems = []
    for found in low_contrast(publication):
        keys = [key for key in (found.pair.foreground, found.pair.background) if key != "white"]
        where = _publication_where(publication, f"{found.group}.{keys[0]}", found.group)
        problems.append(Problem(where, found.describe(),
                                f"choose another {' or '.join(f'`{key}`' for key in keys)} under `{found.group}:`; "
                                "a contrast checker shows the ratio as you try colours"))
    return problems


def check_logo(publication: Publication) -> list[Problem]:
    """A logo with fewer than two pixels per point shown looks soft on high-density screens."""
    problems = []
    shown = logo_width(publication)
    for key, path in (("logo", publication.logo), ("logo_dark", publication.logo_dark)):
        size = pixel_size(path) if path else None
        if path and size is None:
            problems.append(Problem(_publication_where(publication, key), f"{path.name} cannot be read as a picture",
                                    "save it again as PNG, JPEG or GIF"))
        elif size and size[0] < 2 * shown:
            problems.append(Problem(
                _publication_where(publication, key),
                f"{path.name} is {size[0]} pixels wide and shown {shown} wide; it will look soft on high-density screens",
                f"use a file at least {2 * shown} pixels wide, or set `logo_width: {size[0] // 2}`", "warning"))
    return problems


def _publication_where(publication: Publication, key: str, fallback: str = "") -> str:
    """"publication.yaml:LINE" of ``key`` (or of ``fallback``, or line 1)."""
    if publication.source is None:
        return f"field {key}"
    line = publication.lines.get(key) or publication.lines.get(fallback) or 1
    return f"{publication.source.path}:{line}"


def check_images(issue: Issue, links: list[tuple[str, str, dict]]) -> list[Problem]:
    problems = []
    for image, where in _images_with_places(issue):
        name = Path(image.path).name
        if not image.decorative and not image.alt.strip():
            problems.append(Problem(where, f"picture {name} has no alt text",
                                    "describe it for readers who cannot see it, or mark it decorative", about="alt"))
        if not Path(image.path).is_file():
            problems.append(Problem(where, f"picture {name} not found at {image.path}", "check the file name"))
    fix = "give it alt text, or alt=\"\" if it is decorative"
    written = _references(issue)
    for where, tag, url, attrs in written:
        if tag == "img" and "alt" not in attrs:
            problems.append(Problem(where, f"a picture ({url}) has no alt attribute", fix))
    in_content = {url for _where, tag, url, _attrs in written if tag == "img"}
    for tag, url, attrs in links:
        if tag == "img" and "alt" not in attrs and url not in in_content:
            problems.append(Problem("email templates", f"a picture ({url}) has no alt attribute", fix))
    for section in issue.sections:
        for offset, line in enumerate(section.body.splitlines()):
            if re.search(r"!\[\s*\]\(", line):
                problems.append(Problem(_body_where(section, offset), "a picture in the text has no alt text",
                                        "write a description between the square brackets: ![what it shows](...)"))
    return problems


def check_links(issue: Issue, links: list[tuple[str, str, dict]]) -> list[Problem]:
    """Each link and picture the email carries, reported everywhere the editor wrote it."""
    in_email = {(tag, url) for tag, url, _attrs in links}
    written = [(where, tag, url) for where, tag, url, _attrs in _references(issue) if (tag, url) in in_email]
    placed = {(tag, url) for _where, tag, url in written}
    # What the templates add (or what the content wrote but rendering changed) is found in the HTML.
    written += [("email templates", tag, url) for tag, url in dict.fromkeys(in_email - placed)]
    problems = []
    for where, tag, url in dict.fromkeys(written):
        problem = _link_problem(where, "picture" if tag == "img" else "link", url)
        problems += [problem] if problem else []
    return problems


def _link_problem(where: str, what: str, url: str) -> Problem | None:
    if placeholders.PATTERN.fullmatch(url):
        return None  # placeholders become https links per recipient
    parts = urlsplit(url.strip())
    if parts.scheme in ALLOWED_NON_HTTPS or (parts.scheme == "https" and parts.netloc):
        return None
    if parts.scheme == "http":
        return Problem(where, f"{what} {url} is not secure (http)", "use the https:// address")
    if not parts.scheme:
        return Problem(where, f"{what} {url or '(empty)'} is relative; it goes nowhere from an inbox",
                       "use a full https:// address")
    return Problem(where, f"{what} {url} uses {parts.scheme}:", "use an https:// or mailto: link")


def check_placeholders(issue: Issue, rendered: RenderedIssue) -> list[Problem]:
    """Only known placeholders, each intact after compilation, so none is left after filling."""
    known = {f"%%{n}%%" for n in placeholders.NAMES}
    problems = []
    for token in sorted(set(_loose_placeholders(rendered.html) + _loose_placeholders(rendered.text)) - known):
        if token.startswith("%25"):
            message = f"placeholder {token} was URL-encoded, so it cannot be filled"
        else:
            message = f"unknown placeholder {token}; it would be left unfilled and readers would see it as typed"
        problems.append(Problem(_locate(issue, token) or "email templates", message,
                                "use one of " + ", ".join(sorted(known))))
    lost = set(placeholders.find(rendered.mjml)) - set(placeholders.find(rendered.html))
    for name in sorted(lost & set(placeholders.NAMES)):
        problems.append(Problem("email.mjml", f"%%{name}%% did not survive MJML compilation",
                                "put it in text or an href, or inside <mj-raw>"))
    return problems


def check_web_copy(issue: Issue, rendered: RenderedIssue) -> list[Problem]:
    """The web copy is public: no placeholder may reach it from a template.

    Known placeholders in content are replaced by public values when the page
    is rendered; unknown ones an editor wrote are reported by check_placeholders.
    """
    known = {f"%%{n}%%" for n in placeholders.NAMES}
    problems = []
    for page, content in sorted(rendered.web_pages.items()):
        found = [t for t in _loose_placeholders(content) if t in known or not _locate(issue, t)]
        if found:
            problems.append(Problem(f"web copy {page}", f"contains {', '.join(sorted(set(found)))}; the web copy is public",
                                    "remove placeholders from the web templates"))
    return problems


def check_markup(issue: Issue) -> list[Problem]:
    """What sanitizing would silently drop from what the editor wrote."""
    fix = "remove it, or write it in Markdown; it would be dropped from the email"
    problems = []
    for section in issue.sections:
        for offset, description in markup.unsafe_markup(section.body):
            problems.append(Problem(_body_where(section, offset), description, fix))
        for item in section.items:
            where = str(item.source or section.source or issue.folder)
            for text in (item.summary, item.article or ""):
                for _offset, description in markup.unsafe_markup(text):
                    problems.append(Problem(where, f"in {item.heading!r}: {description}", fix))
    return problems


def html_links(html: str) -> list[tuple[str, str, dict]]:
    """(tag, url, attributes) for each <a href> and <img src>, in document order."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    return parser.links


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if tag == "a" and "href" in attributes:
            self.links.append(("a", attributes["href"], attributes))
        elif tag == "img":
            self.links.append(("img", attributes.get("src", ""), attributes))


def _loose_placeholders(text: str) -> list[str]:
    return [m.group(0) for m in LOOSE_PLACEHOLDER.finditer(text)]


def _field(issue: Issue, name: str) -> str:
    where = issue.where(name)
    return str(where) if where else f"field {name}"


def _references(issue: Issue) -> list[tuple[str, str, str, dict]]:
    """(where, "a" or "img", URL, attributes) for every link and picture the editor wrote."""
    found = []
    for section in issue.sections:
        here = str(section.source or section.id)
        found += [(_body_where(section, line), tag, url, attrs)
                  for line, tag, url, attrs in markup.references(section.body)]
        for item in section.items:
            at = str(item.source or here)
            found += [(at, "a", item.url, {"href": item.url})] if item.url else []
            for text in (item.summary, item.article or ""):
                found += [(at, tag, url, attrs) for _line, tag, url, attrs in markup.references(text)]
        for image in [section.image, *(i.image for i in section.items)]:
            if image and image.link:
                found.append((str(image.source or here), "a", image.link, {"href": image.link}))
    return found


def _body_where(section: Section, offset: int) -> str:
    path = section.source.path if section.source else section.id
    return f"{path}:{section.body_line + offset}" if section.body_line else str(path)


def _images_with_places(issue: Issue) -> list[tuple[Image, str]]:
    found = []
    pub = issue.publication
    if pub.logo:
        logo = Image(path=pub.logo, alt=pub.logo_alt)
        where = pub.where("logo_alt" if "logo_alt" in pub.lines else "logo")
        found.append((logo, str(where) if where else "field logo_alt"))
    for section in issue.sections:
        here = str(section.source or section.id)
        if section.image:
            found.append((section.image, str(section.image.source or here)))
        found += [(item.image, str(item.image.source or item.source or here)) for item in section.items if item.image]
    return found


def _locate(issue: Issue, needle: str) -> str:
    """Where the editor wrote ``needle`` (a placeholder): "file:line", or "" if not in the content."""
    if not needle:
        return ""
    for section in issue.sections:
        for offset, line in enumerate(section.body.splitlines()):
            if needle in line:
                return _body_where(section, offset)
        for item in section.items:
            if needle in (item.url or "") or needle in item.summary or needle in (item.article or ""):
                return str(item.source or section.source or section.id)
        for image in [section.image, *(i.image for i in section.items)]:
            if image and needle in (image.link or ""):
                return str(image.source or section.source or section.id)
    return ""
