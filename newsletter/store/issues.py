"""Built issues in the database: what every send of an issue is made from."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.publications import get_publication, sync_publication
from newsletter.store.models import IssueRow, Send, SendState, utcnow


def store_issue(session: Session, rendered) -> IssueRow:
    """Record a rendered issue (a ``render.RenderedIssue``); returns its row.

    Storing the same issue again updates it, unless a send of it has already
    started: subscribers who got the first version and those still waiting
    must get the same thing.
    """
    issue = rendered.issue
    publication = sync_publication(session, issue.publication)
    digest = hashlib.sha256((rendered.html + "\0" + rendered.text + "\0" + issue.subject).encode()).hexdigest()
    row = session.scalars(
        select(IssueRow).where(IssueRow.publication_id == publication.id, IssueRow.slug == issue.slug)
    ).first()
    if row is not None and row.content_hash != digest and _has_started(session, row.id):
        raise InputError(
            Problem(
                str(issue.folder),
                f"issue {issue.slug!r} has changed since a send of it started",
                "give the corrected issue a new slug in issue.yaml, or cancel the send first",
            )
        )
    if row is None:
        row = IssueRow(publication_id=publication.id, slug=issue.slug)
        session.add(row)
    row.title = issue.title
    row.subject = issue.subject
    row.preheader = issue.preheader
    row.issue_date = issue.issue_date
    row.html = rendered.html
    row.text = rendered.text
    row.mjml = rendered.mjml
    row.web_html = rendered.web_pages.get("index.html", "")
    row.articles = {k: v for k, v in rendered.web_pages.items() if k != "index.html"}
    row.content_hash = digest
    row.source_folder = issue.folder.name
    row.built_at = utcnow()
    session.flush()
    return row


def _has_started(session: Session, issue_id: int) -> bool:
    return session.scalar(
        select(Send.id).where(Send.issue_id == issue_id, Send.state.in_((SendState.SENDING, SendState.PAUSED, SendState.FINISHED))).limit(1)
    ) is not None


def get_issue(session: Session, publication_slug: str, slug: str) -> IssueRow:
    publication = get_publication(session, publication_slug)
    row = session.scalars(
        select(IssueRow).where(IssueRow.publication_id == publication.id, IssueRow.slug == slug)
    ).first()
    if row is None:
        raise NotFound(
            f"publication {publication_slug!r} has no stored issue {slug!r}; "
            "`newsletter schedule ISSUE_FOLDER` stores it from its folder"
        )
    return row
