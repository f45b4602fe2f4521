"""The public web copy as static files: issue pages, article pages, archive, Atom feed.

Layout under ``out_dir`` (``publication.web_base_url`` maps to the
publication's folder)::

    <publication slug>/index.html              every issue, newest first
    <publication slug>/feed.xml                Atom feed of the same
    <publication slug>/<issue slug>/index.html the issue
    <publication slug>/<issue slug>/<article>/index.html
    <publication slug>/<issue slug>/images/... pictures used by the email and the pages

Pages come from ``RenderedIssue.web_pages``, which never hold personal data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo

from feedgen.feed import FeedGenerator

from newsletter.authoring.issue import Issue, Publication
from newsletter.authoring.render import RenderedIssue, render_template, template_environment


@dataclass(frozen=True)
class ArchiveEntry:
    title: str
    issue_date: date
    href: str  # relative to the archive page


def write_site(out_dir: Path, publication: Publication, rendered_issues: Iterable[RenderedIssue],
               templates_dir: Path | None = None) -> Path:
    """Write the publication's public pages under out_dir; return the publication's folder."""
    newest_first = sorted(rendered_issues, key=lambda r: (r.issue.issue_date, r.issue.slug), reverse=True)
    site = Path(out_dir) / publication.slug
    site.mkdir(parents=True, exist_ok=True)
    for rendered in newest_first:
        write_issue_pages(site / rendered.issue.slug, rendered)
    (site / "index.html").write_text(archive_page(publication, newest_first, templates_dir), encoding="utf-8")
    (site / "feed.xml").write_bytes(atom_feed(publication, [feed_entry(r.issue) for r in newest_first]))
    return site


def write_issue_pages(issue_dir: Path, rendered: RenderedIssue) -> None:
    """The issue page, its article pages and every picture they and the email use."""
    for relative, page in rendered.web_pages.items():
        path = issue_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    for relative, source in rendered.images.items():
        path = issue_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)


def archive_page(publication: Publication, newest_first: list[RenderedIssue],
                 templates_dir: Path | None = None) -> str:
    entries = [ArchiveEntry(r.issue.title, r.issue.issue_date, f"{r.issue.slug}/") for r in newest_first]
    env = template_environment(publication, templates_dir)
    logo = publication.logo
    # The archive borrows the newest issue's copy of the logo, if there is one.
    logo_url = f"{newest_first[0].issue.slug}/images/{Path(logo).name}" if logo and newest_first else ""
    context = {"publication": publication, "colours": publication.colours, "entries": entries,
               "root": "./", "archive_url": "./", "logo_url": logo_url}
    return render_template(env, "web/archive.html.j2", context)


@dataclass(frozen=True)
class FeedEntry:
    """One issue in the Atom feed: what a feed reader shows and where it leads."""

    url: str
    title: str
    summary: str
    issue_date: date


def feed_entry(issue: Issue) -> FeedEntry:
    return FeedEntry(issue.web_url, issue.title, issue.preheader or issue.subject, issue.issue_date)


def atom_feed(publication, newest_first: list[FeedEntry]) -> bytes:
    """An Atom feed with one entry per issue, linking to its public page.

    ``publication`` is an ``issue.Publication`` or a stored ``PublicationRow``
    (the built site and the web app make the same feed).
    """
    base = publication.web_base_url.rstrip("/") + "/"
    feed = FeedGenerator()
    feed.id(base)
    feed.title(publication.name)
    feed.link(href=base, rel="alternate")
    feed.link(href=base + "feed.xml", rel="self")
    feed.language(publication.language)
    feed.author(name=publication.from_name)
    feed.updated(_published(publication, newest_first[0].issue_date) if newest_first else datetime.now(timezone.utc))
    for item in reversed(newest_first):  # feedgen puts the last added first
        entry = feed.add_entry()
        entry.id(item.url)
        entry.title(item.title)
        entry.link(href=item.url, rel="alternate")
        entry.summary(item.summary)
        entry.published(_published(publication, item.issue_date))
        entry.updated(_published(publication, item.issue_date))
    return feed.atom_str(pretty=True)


def _published(publication, day: date) -> datetime:
    """Issues carry a date only; Atom wants a moment: midnight where the publication lives."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(publication.timezone))
