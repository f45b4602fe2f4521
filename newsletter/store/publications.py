"""Publications in the database, kept in step with their publication files.

The publication file is the source of truth; ``sync_publication`` records it
so that lists, issues and sends can refer to it by id.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import NotFound
from newsletter.authoring.issue import Publication
from newsletter.authoring.sending_block import SendingBlock, lane_settings
from newsletter.store.models import PublicationRow


def sync_publication(session: Session, publication: Publication) -> PublicationRow:
    """Insert or update the row for ``publication.slug``; returns it."""
    row = session.scalars(select(PublicationRow).where(PublicationRow.slug == publication.slug)).first()
    if row is None:
        row = PublicationRow(slug=publication.slug)
        session.add(row)
    row.name = publication.name
    row.from_name = publication.from_name
    row.from_email = publication.from_email
    row.reply_to = publication.reply_to
    row.postal_address = publication.postal_address
    row.web_base_url = publication.web_base_url
    row.timezone = publication.timezone
    row.language = publication.language
    # Keys the file does not own (the console's, e.g. who may approve) are kept.
    row.settings = {**(row.settings or {}), **publication_settings(publication)}
    row.sending = publication.sending.to_json() if publication.sending else {}
    session.flush()
    return row


def publication_settings(publication: Publication) -> dict:
    """What the settings JSON holds: presentation, not identity."""
    return {
        "colours": asdict(publication.colours),
        # The file name only: the folder it sits in differs between machines.
        "logo": publication.logo.name if publication.logo else "",
        "logo_alt": publication.logo_alt,
        "logo_dark": publication.logo_dark.name if publication.logo_dark else "",
        "why_receiving": publication.why_receiving,
        "signup_url": publication.signup_url,
    }


def sending_block(row: PublicationRow) -> SendingBlock:
    """The publication's sending block as stored (empty: the environment's way)."""
    return SendingBlock.from_json(row.sending)


def settings_for(settings: Settings, row: PublicationRow, *, secrets: bool = False) -> Settings:
    """The settings a publication's mail and links use: the environment's with its
    sending block laid over them. Secrets are read only when asked (a worker
    about to send); a missing one raises ConfigError naming publication and field."""
    return lane_settings(settings, sending_block(row), row.slug, secrets=secrets)


def get_publication(session: Session, slug: str) -> PublicationRow:
    row = session.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).first()
    if row is None:
        raise NotFound(f"no publication {slug!r}; {known_publications(session)}")
    return row


def list_publications(session: Session) -> list[PublicationRow]:
    return list(session.scalars(select(PublicationRow).order_by(PublicationRow.slug)))


def known_publications(session: Session) -> str:
    """A sentence for error messages: which publications exist, or how to add one."""
    slugs = [row.slug for row in list_publications(session)]
    if not slugs:
        return (
            "there are no publications yet: record one with "
            "`newsletter publications add FOLDER` (the folder holding publication.yaml)"
        )
    return "known publications: " + ", ".join(slugs)
