"""The web copy online: archive, Atom feed, issue and article pages, images.

Served at the paths the emails link to, when a publication's ``web_base_url``
is this app's ``BASE_URL + "/<publication slug>/"``::

    /<publication>/                         every stored issue, newest first
    /<publication>/feed.xml                 Atom feed of the same
    /<publication>/<issue>/                 the issue (issues.web_html)
    /<publication>/<issue>/<article>/       an article page (issues.articles)
    /<publication>/<issue>/images/<file>    from WEB_COPY_DIR (a build's web/ folder)

Pages come from the issues table, which holds the public copy only (no
personal data). Image files are not in the database: they are served from
``Settings.web_copy_dir``, laid out as ``newsletter build`` writes its
``web/`` folder, and only for issues that are stored.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.authoring.issue import Colours, Publication
from newsletter.authoring.render import render_template, template_environment
from newsletter.store.models import IssueRow, PublicationRow
from newsletter.authoring.webcopy import ArchiveEntry, FeedEntry, atom_feed
from newsletter.web.pages import database, install, not_found, settings

blueprint = Blueprint("archive", __name__)
blueprint.record_once(install)

# Public pages change when an issue is rebuilt; a few minutes of caching is plenty.
PUBLIC_CACHE = "public, max-age=300"


@blueprint.get("/<publication_slug>/")
def archive(publication_slug: str):
    with database() as session:
        row = _publication(session, publication_slug)
        if row is None:
            return not_found()
        issues = _issues_newest_first(session, row)
        publication = publication_of(row)
        env = template_environment(publication, settings().templates_dir)
        entries = [ArchiveEntry(i.title, i.issue_date, f"{i.slug}/") for i in issues]
        logo = f"{issues[0].slug}/images/{publication.logo.name}" if publication.logo and issues else ""
        html = render_template(env, "web/archive.html.j2", {
            "publication": publication, "colours": publication.colours, "entries": entries,
            "root": "./", "archive_url": "./", "logo_url": logo,
        })
        return _public(html, "text/html")


@blueprint.get("/<publication_slug>/feed.xml")
def feed(publication_slug: str):
    with database() as session:
        row = _publication(session, publication_slug)
        if row is None:
            return not_found()
        entries = feed_entries(row, _issues_newest_first(session, row))
        return _public(atom_feed(row, entries), "application/atom+xml")


@blueprint.get("/<publication_slug>/<issue_slug>/")
def issue_page(publication_slug: str, issue_slug: str):
    with database() as session:
        issue = _issue(session, publication_slug, issue_slug)
        if issue is None or not issue.web_html:
            return not_found()
        return _public(issue.web_html, "text/html")


@blueprint.get("/<publication_slug>/<issue_slug>/<article_slug>/")
def article_page(publication_slug: str, issue_slug: str, article_slug: str):
    with database() as session:
        issue = _issue(session, publication_slug, issue_slug)
        html = (issue.articles or {}).get(f"{article_slug}/index.html") if issue is not None else None
        if not html:
            return not_found()
        return _public(html, "text/html")


@blueprint.get("/<publication_slug>/<issue_slug>/images/<path:name>")
def image(publication_slug: str, issue_slug: str, name: str):
    with database() as session:
        if _issue(session, publication_slug, issue_slug) is None:
            return not_found()
    # The slugs were checked against the database; send_from_directory refuses
    # any name that would leave the folder.
    folder = Path(settings().web_copy_dir) / publication_slug / issue_slug / "images"
    return send_from_directory(folder, name, max_age=86400)


def feed_entries(publication: PublicationRow, newest_first: list[IssueRow]) -> list[FeedEntry]:
    """The stored issues as feed entries (ids and links match the built feed's)."""
    base = publication.web_base_url.rstrip("/") + "/"
    return [
        FeedEntry(f"{base}{issue.slug}/", issue.title, issue.preheader or issue.subject, issue.issue_date)
        for issue in newest_first
    ]


def publication_of(row: PublicationRow) -> Publication:
    """The publication as the web templates know it, from its stored row."""
    stored = row.settings or {}
    colours = {f.name: v for f in fields(Colours) if (v := (stored.get("colours") or {}).get(f.name))}
    return Publication(
        slug=row.slug, name=row.name, from_name=row.from_name, from_email=row.from_email,
        reply_to=row.reply_to, postal_address=row.postal_address, web_base_url=row.web_base_url,
        timezone=row.timezone, language=row.language,
        logo=Path(stored["logo"]) if stored.get("logo") else None, logo_alt=stored.get("logo_alt", ""),
        colours=Colours(**colours), why_receiving=stored.get("why_receiving", ""),
        signup_url=stored.get("signup_url", ""),
    )


def _public(body, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


def _publication(session: Session, slug: str) -> PublicationRow | None:
    return session.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).first()


def _issue(session: Session, publication_slug: str, issue_slug: str) -> IssueRow | None:
    return session.scalars(
        select(IssueRow).join(PublicationRow, PublicationRow.id == IssueRow.publication_id)
        .where(PublicationRow.slug == publication_slug, IssueRow.slug == issue_slug)
    ).first()


def _issues_newest_first(session: Session, publication: PublicationRow) -> list[IssueRow]:
    return list(session.scalars(
        select(IssueRow).where(IssueRow.publication_id == publication.id)
        .order_by(IssueRow.issue_date.desc(), IssueRow.slug.desc())
    ))
