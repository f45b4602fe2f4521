"""A publication's subscribers in the console: find them, read one, act on one.

Takes in a publication (every account with a role there may look), a search
text and a keyset position, or one subscriber's id; hands on pages of
``Found`` rows and one ``SubscriberView``: their lists, custom fields and a
history put together from what the database keeps (the subscriber row, the
memberships, confirmation emails, the send ledger, provider events, the
suppression list and the audit log). Nothing here keeps history of its own.

Acting on a subscriber calls the same functions as ``newsletter subscribers``
(``audience.subscribers``, ``audience.erasure``) and writes one audit entry in
the same transaction. Audit entries name the subscriber by id, never by
address, so an erasure leaves no address behind in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from newsletter.addresses import address_key
from newsletter.audience import erasure
from newsletter.audience import subscribers as subs
from newsletter.audience.suppressions import find_suppression
from newsletter.errors import InputError, NotFound, Problem
from newsletter.accounts import audit
from newsletter.console.workflow import Actor
from newsletter.console.clicks import click_moments
from newsletter.store.models import (
    AuditEntry,
    ConfirmationEmail,
    Delivery,
    IssueRow,
    MailingList,
    Membership,
    ProviderEvent,
    PublicationRow,
    Send,
    Subscriber,
    Suppression,
)
from newsletter.wording import counted

PAGE_SIZE = 50
HISTORY_LIMIT = 500  # moments shown on one subscriber's page, newest first

SOURCES = {
    "cli": "added with the newsletter command",
    "import": "imported from a CSV file",
    "signup": "signed up on the sign-up page",
    "console": "added in the console",
}
DELIVERY_WORDS = {
    "sent": "sent", "failed": "could not be delivered", "skipped": "not sent (suppressed or unsubscribed by then)",
    "cancelled": "not sent (the send was cancelled)", "pending": "waiting to be sent", "claimed": "being sent",
    "sending": "being sent", "retry": "waiting for another try",
}


@dataclass(frozen=True)
class Found:
    """One row of a search: who, and which of the publication's lists they are on."""

    id: int
    email: str
    name: str
    status: str
    lists: list[tuple[str, str]]  # (list name, membership status)


@dataclass(frozen=True)
class SearchPage:
    rows: list[Found]
    next_after: int | None  # the id to pass as ``after`` for the next page, None on the last
    publication_has_subscribers: bool


@dataclass(frozen=True)
class ListLine:
    list_id: int
    slug: str
    name: str
    status: str  # confirmed | unconfirmed | unsubscribed
    joined_at: datetime
    changed_at: datetime


@dataclass(frozen=True)
class Moment:
    at: datetime
    kind: str  # joined | confirmed | left | sent | bounced | complained | unsubscribed | suppressed | console | ...
    text: str
    detail: str = ""


@dataclass
class SubscriberView:
    subscriber: Subscriber
    lists: list[ListLine]
    other_lists: list[MailingList]  # the publication's lists they are not on
    suppression: Suppression | None
    history: list[Moment] = field(default_factory=list)


# --- finding -----------------------------------------------------------------------------------


def publication_list_ids(publication_id: int):
    return select(MailingList.id).where(MailingList.publication_id == publication_id).scalar_subquery()


def in_publication(publication_id: int):
    """SQL: the subscriber is (or was) on one of the publication's lists."""
    return exists().where(Membership.subscriber_id == Subscriber.id,
                          Membership.list_id.in_(publication_list_ids(publication_id)))


def matching(text: str):
    """SQL: the address (by its identity key) or the name contains ``text``, in any case."""
    text = text.strip()
    key = address_key(text) if "@" in text else text.lower()
    return Subscriber.email_key.contains(key, autoescape=True) | Subscriber.name.icontains(text, autoescape=True)


def search(session: Session, publication_id: int, text: str = "", after: int | None = None,
           limit: int = PAGE_SIZE) -> SearchPage:
    """One page of the publication's subscribers in id order (keyset: ``after`` the last id shown)."""
    statement = select(Subscriber).where(in_publication(publication_id)).order_by(Subscriber.id).limit(limit + 1)
    if after is not None:
        statement = statement.where(Subscriber.id > after)
    if text.strip():
        statement = statement.where(matching(text))
    rows = list(session.scalars(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    lists = _lists_of(session, publication_id, [row.id for row in rows])
    found = [Found(row.id, row.email, row.name, row.status, lists.get(row.id, [])) for row in rows]
    has_any = bool(found) or bool(session.scalar(select(in_publication(publication_id))))
    return SearchPage(found, rows[-1].id if more else None, has_any)


def _lists_of(session: Session, publication_id: int, subscriber_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    found: dict[int, list[tuple[str, str]]] = {}
    if not subscriber_ids:
        return found
    rows = session.execute(
        select(Membership.subscriber_id, MailingList.name, Membership.status).join(MailingList)
        .where(Membership.subscriber_id.in_(subscriber_ids), MailingList.publication_id == publication_id)
        .order_by(MailingList.name)
    )
    for subscriber_id, name, status in rows:
        found.setdefault(subscriber_id, []).append((name, status))
    return found


# --- one subscriber --------------------------------------------------------------------------------


def get_in_publication(session: Session, publication_id: int, subscriber_id: int) -> Subscriber:
    """The subscriber, if they are on one of the publication's lists; NotFound otherwise."""
    subscriber = subs.subscriber_by_id(session, subscriber_id)
    if subscriber is None or not session.scalar(
        select(exists().where(Membership.subscriber_id == subscriber.id,
                              Membership.list_id.in_(publication_list_ids(publication_id))))
    ):
        raise NotFound(f"no subscriber {subscriber_id} in this publication")
    return subscriber


def subscriber_view(session: Session, publication_id: int, subscriber_id: int) -> SubscriberView:
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    lists = [
        ListLine(list_id, slug, name, status, joined, changed)
        for list_id, slug, name, status, joined, changed in session.execute(
            select(MailingList.id, MailingList.slug, MailingList.name, Membership.status,
                   Membership.created_at, Membership.updated_at)
            .join(Membership, Membership.list_id == MailingList.id)
            .where(Membership.subscriber_id == subscriber.id, MailingList.publication_id == publication_id)
            .order_by(MailingList.name)
        )
    ]
    joined = {line.list_id for line in lists}
    others = [row for row in session.scalars(select(MailingList).where(MailingList.publication_id == publication_id)
                                            .order_by(MailingList.name)) if row.id not in joined]
    view = SubscriberView(subscriber, lists, others, find_suppression(session, subscriber.email))
    view.history = history(session, publication_id, subscriber, lists, view.suppression)
    return view


def history(session: Session, publication_id: int, subscriber: Subscriber, lists: list[ListLine],
            suppression: Suppression | None) -> list[Moment]:
    """What the database tells of this person in this publication, newest first."""
    moments = [Moment(subscriber.created_at, "joined", "Became a subscriber",
                      SOURCES.get(subscriber.source, subscriber.source))]
    for line in lists:
        moments += _membership_moments(line)
    confirmation = session.scalars(select(ConfirmationEmail).where(ConfirmationEmail.subscriber_id == subscriber.id)).first()
    if confirmation is not None:
        moments.append(Moment(confirmation.last_sent_at, "confirmation", "A link to confirm was emailed",
                              f"{counted(confirmation.emails_sent, 'such email')} in all; this is the latest"))
    delivery_ids = []
    for delivery, send, issue in session.execute(
        select(Delivery, Send, IssueRow).join(Send, Delivery.send_id == Send.id).join(IssueRow, Send.issue_id == IssueRow.id)
        .where(Delivery.subscriber_id == subscriber.id, IssueRow.publication_id == publication_id)
    ):
        delivery_ids.append(delivery.id)
        at = delivery.sent_at or send.started_at or send.scheduled_at
        detail = DELIVERY_WORDS.get(delivery.state, delivery.state)
        if delivery.state == "failed" and delivery.last_error:
            detail += f": {delivery.last_error}"
        moments.append(Moment(at, "sent" if delivery.state == "sent" else "not-sent",
                              f"“{issue.title}” ({issue.issue_date:%d %B %Y})", detail))
    moments += _event_moments(session, subscriber, delivery_ids)
    moments += [Moment(at, "clicked", text, detail)  # per_person publications only (docs/clicks.md)
                for at, text, detail in click_moments(session, publication_id, subscriber.id)]
    if suppression is not None:
        moments.append(Moment(suppression.created_at, "suppressed", f"Suppressed: {REASONS.get(suppression.reason, suppression.reason)}",
                              suppression.source))
    for entry in session.scalars(select(AuditEntry).where(AuditEntry.publication_id == publication_id,
                                                          AuditEntry.detail.startswith(audit_subject(subscriber)),
                                                          # SQLite may give a later subscriber an erased one's id
                                                          AuditEntry.at >= subscriber.created_at).limit(HISTORY_LIMIT)):
        moments.append(Moment(entry.at, "console", entry.action.capitalize() + _after_subject(entry.detail),
                              f"by {entry.actor}, in the console"))
    moments.sort(key=lambda m: m.at, reverse=True)
    return moments[:HISTORY_LIMIT]


def _membership_moments(line: ListLine) -> list[Moment]:
    """A membership keeps when it began and when its status last changed; nothing in between."""
    changed = (line.changed_at - line.joined_at).total_seconds() > 1
    if line.status == "unconfirmed":
        return [Moment(line.joined_at, "joined", f"Joined “{line.name}”", "waiting for them to confirm")]
    if line.status == "confirmed":
        if changed:
            return [Moment(line.joined_at, "joined", f"Joined “{line.name}”"),
                    Moment(line.changed_at, "confirmed", f"Confirmed “{line.name}”")]
        return [Moment(line.joined_at, "joined", f"Joined “{line.name}”", "confirmed when added")]
    return [Moment(line.joined_at, "joined", f"Joined “{line.name}”"),
            Moment(line.changed_at, "left", f"Unsubscribed from “{line.name}”")]


EVENT_WORDS = {"bounced": "Bounced", "complained": "Complained (marked an email as spam)",
               "unsubscribed": "Unsubscribed through their mail provider"}
REASONS = {"hard_bounce": "the address does not exist (hard bounce)", "complaint": "they complained (spam report)",
           "soft_bounce": "repeated soft bounces", "manual": "added by hand", "erased": "erased on request"}


def _event_moments(session: Session, subscriber: Subscriber, delivery_ids: list[int]) -> list[Moment]:
    """Bounces, complaints and provider unsubscribes: of this publication's messages, or of no known message."""
    about_them = ProviderEvent.email.in_({subscriber.email, subscriber.email_key})
    mine = (ProviderEvent.delivery_id.is_(None) & about_them)
    if delivery_ids:
        mine = mine | ProviderEvent.delivery_id.in_(delivery_ids)
    query = (select(ProviderEvent).where(mine, ProviderEvent.kind.in_(EVENT_WORDS))
             .order_by(ProviderEvent.occurred_at.desc()).limit(HISTORY_LIMIT))
    moments = []
    for event in session.scalars(query):
        text = EVENT_WORDS[event.kind] + (f" ({event.bounce})" if event.bounce else "")
        moments.append(Moment(event.occurred_at, event.kind, text, f"reported by {event.source}"
                              + (f": {event.detail}" if event.detail else "")))
    return moments


# --- acting on one -----------------------------------------------------------------------------------


def audit_subject(subscriber: Subscriber) -> str:
    return f"subscriber {subscriber.id}: "


def _after_subject(detail: str) -> str:
    rest = detail.partition(": ")[2]
    return f": {rest}" if rest else ""


def _log(session: Session, actor: Actor, publication_id: int, subscriber: Subscriber, action: str, detail: str) -> None:
    audit.record(session, actor.email, action, audit_subject(subscriber) + detail, client=actor.client,
                 publication_id=publication_id)


def _publication_list(session: Session, publication_id: int, list_id: int) -> MailingList:
    mailing_list = session.get(MailingList, list_id)
    if mailing_list is None or mailing_list.publication_id != publication_id:
        raise InputError(Problem("field list", "that list is not one of this publication's", "choose a list from the form"))
    return mailing_list


def add_to_list(session: Session, actor: Actor, publication_id: int, subscriber_id: int, list_id: int) -> MailingList:
    """Put them on a list, confirmed (refused, as everywhere, for someone who left it or is suppressed)."""
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    mailing_list = _publication_list(session, publication_id, list_id)
    subs.add_subscriber(session, subscriber.email, lists=[mailing_list], source="console")
    _log(session, actor, publication_id, subscriber, "added to a list", mailing_list.name)
    return mailing_list


def remove_from_list(session: Session, actor: Actor, publication_id: int, subscriber_id: int,
                     list_id: int) -> tuple[MailingList, bool]:
    """Take them off a list: the membership is forgotten (an import may add them again).
    Returns the list, and whether they are still on any of the publication's lists."""
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    mailing_list = _publication_list(session, publication_id, list_id)
    subs.remove_subscriber(session, subscriber.email, mailing_list)
    _log(session, actor, publication_id, subscriber, "removed from a list", mailing_list.name)
    still_here = session.scalar(select(exists().where(
        Membership.subscriber_id == subscriber.id, Membership.list_id.in_(publication_list_ids(publication_id)))))
    return mailing_list, bool(still_here)


def unsubscribe(session: Session, actor: Actor, publication_id: int, subscriber_id: int,
                list_id: int | None = None) -> list[MailingList]:
    """Record that they asked to stop: one list, or (no list) every list of this publication."""
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    if list_id is not None:
        mailing_list = _publication_list(session, publication_id, list_id)
        status = session.scalar(select(Membership.status).where(Membership.subscriber_id == subscriber.id,
                                                                Membership.list_id == mailing_list.id))
        if status is None:
            raise InputError(Problem("field list", f"they are not on “{mailing_list.name}”",
                                     "reload their page to see the lists they are on"))
        targets = [mailing_list] if status != "unsubscribed" else []
    else:
        targets = list(session.scalars(
            select(MailingList).join(Membership, Membership.list_id == MailingList.id)
            .where(Membership.subscriber_id == subscriber.id, MailingList.publication_id == publication_id,
                   Membership.status != "unsubscribed").order_by(MailingList.name)))
    for mailing_list in targets:
        subs.unsubscribe(session, subscriber.email, mailing_list)
    if targets:
        _log(session, actor, publication_id, subscriber, "unsubscribed", ", ".join(t.name for t in targets))
    return targets


def require_admin(actor: Actor, what: str) -> None:
    if not actor.operator.is_admin:
        raise PermissionError(f"{what} needs an admin account")


def erasure_preview(session: Session, publication_id: int, subscriber_id: int) -> tuple[Subscriber, erasure.ErasureReport, list[str]]:
    """Who would be erased, what would go, and the other publications whose lists they are on."""
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    report = erasure.what_erasure_removes(session, subscriber.email)
    elsewhere = list(session.scalars(
        select(PublicationRow.name).join(MailingList, MailingList.publication_id == PublicationRow.id)
        .join(Membership, Membership.list_id == MailingList.id)
        .where(Membership.subscriber_id == subscriber.id, PublicationRow.id != publication_id).distinct()))
    return subscriber, report, sorted(elsewhere)


def erase(session: Session, actor: Actor, publication_id: int, subscriber_id: int) -> erasure.ErasureReport:
    """What ``newsletter subscribers erase`` does, by an admin; logged without the address."""
    require_admin(actor, "Erasing a subscriber")
    subscriber = get_in_publication(session, publication_id, subscriber_id)
    subject = audit_subject(subscriber)
    report = erasure.erase_subscriber(session, subscriber.email)
    audit.record(session, actor.email, "erased a subscriber",
                 f"{subject}{report.memberships_deleted} memberships deleted, {report.ledger_rows_anonymised} ledger rows "
                 f"and {report.events_anonymised} events anonymised", client=actor.client, publication_id=publication_id)
    return report
