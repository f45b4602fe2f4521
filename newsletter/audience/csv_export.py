"""Subscribers out to CSV, in the columns the import reads (email, name, lists,
then the custom fields), spreadsheet formulas neutralised: an export imports
back unchanged. Keyset pages of subscribers, so memory stays flat however
many there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, TextIO

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from newsletter.audience.csv_format import CSV_COLUMNS, SafeWriter, write_whole
from newsletter.audience.subscribers import JOIN_STATUSES, check_status, resolve_list
from newsletter.store.lookups import keyset_pages
from newsletter.store.models import MailingList, Membership, Subscriber
from newsletter.store.publications import get_publication

EXPORT_PAGE = 5000


def export_csv(
    session: Session,
    path_or_file: str | Path | TextIO,
    list=None,
    *,
    publication_slug: str | None = None,
    status: str = "confirmed",
) -> int:
    """Write the active subscribers whose membership has ``status`` as CSV; returns the rows written.

    The columns are the ones ``import_csv`` reads, so an export imports back
    unchanged. Unsubscribed people are never exported: an export imported
    elsewhere must not sign them up again.
    """
    check_status(status, JOIN_STATUSES)
    list_ids = _export_list_ids(session, list, publication_slug)
    if isinstance(path_or_file, (str, Path)):
        return _export_to_path(session, Path(path_or_file), list_ids, status)
    return _write_export(session, path_or_file, list_ids, status)


def _export_list_ids(session: Session, list, publication_slug: str | None) -> list[int]:
    if list is not None:
        return [resolve_list(session, publication_slug, list).id]
    query = select(MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    return [*session.scalars(query)]


def _export_to_path(session: Session, path: Path, list_ids: list[int], status: str) -> int:
    return write_whole(path, lambda handle: _write_export(session, handle, list_ids, status))


def _write_export(session: Session, out: TextIO, list_ids: list[int], status: str) -> int:
    keys = sorted({key for attributes in _export_pages(session, list_ids, status, attributes_only=True) for key in attributes})
    keys = [key for key in keys if key not in CSV_COLUMNS]
    writer = SafeWriter(out)
    writer.writerow([*CSV_COLUMNS, *keys])
    count = 0
    for subscriber_id, email, name, attributes, slugs in _export_pages(session, list_ids, status):
        writer.writerow([email, name, ";".join(slugs), *(attributes.get(key, "") for key in keys)])
        count += 1
    return count


def _export_pages(session: Session, list_ids: list[int], status: str, attributes_only: bool = False) -> Iterator:
    """Keyset pages of the exported subscribers, so memory stays flat however many there are."""
    member = select(Membership.id).where(
        Membership.subscriber_id == Subscriber.id, Membership.status == status, Membership.list_id.in_(list_ids)
    )
    query = (
        select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.attributes)
        .where(Subscriber.status == "active", exists(member))
        .order_by(Subscriber.id)
        .limit(EXPORT_PAGE)
    )
    for page in keyset_pages(session, query, Subscriber.id):
        if attributes_only:
            yield from (row.attributes or {} for row in page)
            continue
        slugs = _export_slugs(session, [row.id for row in page], list_ids, status)
        for row in page:
            yield row.id, row.email, row.name, row.attributes or {}, slugs.get(row.id, [])


def _export_slugs(session: Session, page_ids: list[int], list_ids: list[int], status: str) -> dict[int, list[str]]:
    """Each subscriber's list slugs, for one page. An id range, not IN (ids), so the
    (list, status, subscriber) index answers it without a plan that depends on statistics."""
    slug_of = {list_id: slug for list_id, slug in session.execute(select(MailingList.id, MailingList.slug))}
    found: dict[int, list[str]] = {}
    rows = session.execute(
        select(Membership.subscriber_id, Membership.list_id).where(
            Membership.list_id.in_(list_ids), Membership.status == status,
            Membership.subscriber_id.between(page_ids[0], page_ids[-1]),
        )
    )
    for subscriber_id, list_id in rows:
        found.setdefault(subscriber_id, []).append(slug_of[list_id])
    return {subscriber_id: sorted(slugs) for subscriber_id, slugs in found.items()}
