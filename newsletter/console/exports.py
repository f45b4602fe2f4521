"""A list or a segment as CSV, for the console's download: produced a page at
a time (keyset pages of subscribers), so the web process never holds the
whole file, and with spreadsheet formulas neutralised as the CLI's export does.

The columns are the CLI export's (email, name, lists, then the custom
fields), so a download imports back unchanged. A list's export holds who the
CLI's `newsletter subscribers export --list` holds (active, confirmed on it);
a segment's holds its audience (``segments.audience_filter``: also without
suppressed addresses).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import Session

from newsletter.audience.segments import audience_filter, get_segment, publication_list_ids
from newsletter.audience.csv_format import CSV_COLUMNS, formula_safe
from newsletter.errors import InputError, Problem
from newsletter.store.lookups import keyset_pages
from newsletter.store.models import MailingList, Membership, PublicationRow, Subscriber

PAGE = 2000


def list_export(session: Session, publication: PublicationRow, list_slug: str) -> Iterator[str]:
    """The list's confirmed, active subscribers as CSV text, a page at a time."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.publication_id == publication.id,
                                                            MailingList.slug == list_slug))
    if mailing_list is None:
        raise InputError(Problem("list", f"{publication.slug} has no list {list_slug!r}", "choose one of its lists"))
    member = exists().where(Membership.subscriber_id == Subscriber.id, Membership.list_id == mailing_list.id,
                            Membership.status == "confirmed")
    return csv_pages(session, and_(Subscriber.status == "active", member), [mailing_list.id])


def segment_export(session: Session, publication: PublicationRow, name: str) -> Iterator[str]:
    """The segment's audience today as CSV text, a page at a time."""
    segment = get_segment(session, publication.slug, name)
    list_ids = publication_list_ids(session, publication)
    return csv_pages(session, audience_filter(session, publication, list_ids, segment.condition), list_ids)


def csv_pages(session: Session, where: ColumnElement[bool], list_ids: list[int]) -> Iterator[str]:
    keys = sorted({key for attributes in _attribute_pages(session, where) for key in attributes} - set(CSV_COLUMNS))
    yield _lines([[*CSV_COLUMNS, *keys]])
    slug_of = dict(session.execute(select(MailingList.id, MailingList.slug).where(MailingList.id.in_(list_ids))).all())
    query = (select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.attributes)
             .where(where).order_by(Subscriber.id).limit(PAGE))
    for page in keyset_pages(session, query, Subscriber.id):
        slugs: dict[int, list[str]] = {}
        for subscriber_id, list_id in session.execute(
            select(Membership.subscriber_id, Membership.list_id).where(
                Membership.list_id.in_(list_ids), Membership.status == "confirmed",
                Membership.subscriber_id.between(page[0].id, page[-1].id))
        ):
            slugs.setdefault(subscriber_id, []).append(slug_of[list_id])
        yield _lines([[row.email, row.name, ";".join(sorted(slugs.get(row.id, []))),
                       *((row.attributes or {}).get(key, "") for key in keys)] for row in page])


def _attribute_pages(session: Session, where: ColumnElement[bool]) -> Iterator[dict]:
    query = select(Subscriber.id, Subscriber.attributes).where(where).order_by(Subscriber.id).limit(PAGE)
    for page in keyset_pages(session, query, Subscriber.id):
        yield from (row.attributes or {} for row in page)


def _lines(rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for values in rows:
        writer.writerow([formula_safe(v) if isinstance(v, str) else v for v in values])
    return out.getvalue()
