"""Subscribers out to CSV, in the columns the import reads (email, name, lists,
then the custom fields), spreadsheet formulas neutralised: an export imports
back unchanged. The CLI's file and the console's download of a list or a
segment are one export: one pass for the custom fields, one query a page for
the list slugs, one writer. Keyset pages of subscribers, so memory stays flat
however many there are, and the console sends each page as it is made.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator, TextIO

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import Session

from newsletter.audience.csv_format import CSV_COLUMNS, SafeWriter, write_whole
from newsletter.audience.segments import audience_filter, get_segment, publication_list_ids
from newsletter.audience.subscribers import JOIN_STATUSES, check_status, resolve_list
from newsletter.errors import InputError, Problem
from newsletter.store.lookups import keyset_pages
from newsletter.store.models import MailingList, Membership, PublicationRow, Subscriber
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
    pages = _row_pages(session, _members(list_ids, status), list_ids, status)
    if isinstance(path_or_file, (str, Path)):
        return write_whole(Path(path_or_file), lambda handle: _write(handle, pages))
    return _write(path_or_file, pages)


def list_export(session: Session, publication: PublicationRow, list_slug: str) -> Iterator[str]:
    """The list's confirmed, active subscribers (whom ``export_csv`` writes for it) as CSV text,
    a page at a time. An unknown list is an InputError now, before the first page."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.publication_id == publication.id,
                                                            MailingList.slug == list_slug))
    if mailing_list is None:
        raise InputError(Problem("list", f"{publication.slug} has no list {list_slug!r}", "choose one of its lists"))
    return text_pages(session, _members([mailing_list.id], "confirmed"), [mailing_list.id])


def segment_export(session: Session, publication: PublicationRow, name: str) -> Iterator[str]:
    """The segment's audience today (``segments.audience_filter``: also without suppressed
    addresses) as CSV text, a page at a time. An unknown segment is NotFound now."""
    segment = get_segment(session, publication.slug, name)
    list_ids = publication_list_ids(session, publication)
    return text_pages(session, audience_filter(session, publication, list_ids, segment.condition), list_ids)


def text_pages(session: Session, where: ColumnElement[bool], list_ids: list[int],
               status: str = "confirmed") -> Iterator[str]:
    """The subscribers ``where`` picks as CSV text: the header, then a piece per page."""
    for rows in _row_pages(session, where, list_ids, status):
        out = io.StringIO()
        SafeWriter(out).writerows(rows)
        yield out.getvalue()


def _write(out: TextIO, pages: Iterator[list[list]]) -> int:
    writer, count = SafeWriter(out), 0
    writer.writerows(next(pages))  # the header
    for rows in pages:
        writer.writerows(rows)
        count += len(rows)
    return count


def _export_list_ids(session: Session, list, publication_slug: str | None) -> list[int]:
    if list is not None:
        return [resolve_list(session, publication_slug, list).id]
    query = select(MailingList.id)
    if publication_slug is not None:
        query = query.where(MailingList.publication_id == get_publication(session, publication_slug).id)
    return [*session.scalars(query)]


def _members(list_ids: list[int], status: str) -> ColumnElement[bool]:
    """Active subscribers with a membership of ``status`` in one of the lists."""
    member = select(Membership.id).where(
        Membership.subscriber_id == Subscriber.id, Membership.status == status, Membership.list_id.in_(list_ids)
    )
    return and_(Subscriber.status == "active", exists(member))


def _row_pages(session: Session, where: ColumnElement[bool], list_ids: list[int], status: str) -> Iterator[list[list]]:
    """The header row, then each keyset page of rows: email, name, the slugs of the lists
    (of ``list_ids``) where the membership has ``status``, each custom field."""
    keys = sorted({key for attributes in _attribute_pages(session, where) for key in attributes} - set(CSV_COLUMNS))
    yield [[*CSV_COLUMNS, *keys]]
    slug_of = dict(session.execute(select(MailingList.id, MailingList.slug).where(MailingList.id.in_(list_ids))).all())
    query = (select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.attributes)
             .where(where).order_by(Subscriber.id).limit(EXPORT_PAGE))
    for page in keyset_pages(session, query, Subscriber.id):
        lists = _page_lists(session, page[0].id, page[-1].id, list_ids, status)
        yield [[row.email, row.name, ";".join(sorted(slug_of[list_id] for list_id in lists.get(row.id, []))),
                *((row.attributes or {}).get(key, "") for key in keys)] for row in page]


def _attribute_pages(session: Session, where: ColumnElement[bool]) -> Iterator[dict]:
    """Each exported subscriber's custom fields, read a keyset page at a time."""
    query = select(Subscriber.id, Subscriber.attributes).where(where).order_by(Subscriber.id).limit(EXPORT_PAGE)
    for page in keyset_pages(session, query, Subscriber.id):
        yield from (row.attributes or {} for row in page)


def _page_lists(session: Session, first_id: int, last_id: int, list_ids: list[int], status: str) -> dict[int, list[int]]:
    """The ids of each subscriber's lists, for one page. An id range, not IN (ids), so the
    (list, status, subscriber) index answers it without a plan that depends on statistics."""
    found: dict[int, list[int]] = {}
    for subscriber_id, list_id in session.execute(
        select(Membership.subscriber_id, Membership.list_id).where(
            Membership.list_id.in_(list_ids), Membership.status == status,
            Membership.subscriber_id.between(first_id, last_id),
        )
    ):
        found.setdefault(subscriber_id, []).append(list_id)
    return found
