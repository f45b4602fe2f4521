"""Leaving and choosing: one-click unsubscribe (/u/<token>) and preferences (/p/<token>).

RFC 8058: a mailbox provider POSTs ``List-Unsubscribe=One-Click`` to the
List-Unsubscribe link, with no cookie, and expects a 2xx at once. So the POST
takes no CSRF token, never redirects, takes effect in the same request (the
sender re-checks memberships when it claims rows, so a send under way skips
the person) and can be repeated. A GET of the same link only shows a button:
link scanners open every link and must not unsubscribe anyone.

The preferences page is the footer link. Its form changes what the person
gets, so it carries a CSRF token bound to their session cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience import subscribers
from newsletter.sending.send_record import list_ids_of
from newsletter.store.models import MailingList, Membership, PublicationRow, Send, Subscriber, utcnow
from newsletter.audience.tokens import PREFERENCES, UNSUBSCRIBE, BadToken, preferences_url, read_token
from newsletter.web import security
from newsletter.web.pages import database, install, message, not_found, page, settings

blueprint = Blueprint("subscription", __name__)
blueprint.record_once(install)

ONE_CLICK = ("List-Unsubscribe", "One-Click")


@dataclass(frozen=True)
class ListChoice:
    mailing_list: MailingList
    subscribed: bool


# --- one-click unsubscribe -----------------------------------------------------------


@blueprint.get("/u/<token>")
def unsubscribe_page(token: str):
    with database() as session:
        target = _unsubscribe_target(session, token)
        if target is None:
            return not_found()
        publication, mailing_list, subscriber, _ = target
        return page("unsubscribe.html", publication=publication, mailing_list=mailing_list,
                    action=request.path, field=ONE_CLICK, preferences=_preferences_path(subscriber))


@blueprint.post("/u/<token>")
def unsubscribe(token: str):
    if request.form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        return message("Nothing was changed", "This request did not ask to unsubscribe.",
                       "Use the button on the unsubscribe page.", status=400)
    with database() as session:
        target = _unsubscribe_target(session, token)
        if target is None:
            return not_found()
        publication, mailing_list, subscriber, lists = target
        if subscriber is not None:  # someone erased since: there is nobody left to unsubscribe
            for each in lists:  # a send to several lists: leave every one it came through
                subscribers.unsubscribe(session, subscriber.email, each)
        names = " or ".join(each.name for each in lists)
        return message("You are unsubscribed", f"You will get no more {names} from {publication.name}.",
                       "If this was a mistake, you can sign up again at any time.", publication=publication,
                       link=(_preferences_path(subscriber), "Change your other choices") if subscriber else None)


def _unsubscribe_target(session: Session, token: str):
    """(publication, first list, subscriber or None, the send's lists) for a valid link, else None."""
    try:
        send_id, subscriber_id = read_token(settings(), UNSUBSCRIBE, token)
        send = session.get(Send, int(send_id))
    except (BadToken, TypeError, ValueError):
        return None
    if send is None:
        return None
    mailing_list = session.get(MailingList, send.list_id)
    subscriber = subscribers.subscriber_by_id(session, int(subscriber_id))
    lists = [session.get(MailingList, list_id) for list_id in list_ids_of(session, send)]
    return session.get(PublicationRow, mailing_list.publication_id), mailing_list, subscriber, lists


def _preferences_path(subscriber: Subscriber | None) -> str:
    if subscriber is None:
        return ""
    return preferences_url(settings(), subscriber.id).removeprefix(settings().base_url)


# --- preferences ---------------------------------------------------------------------


@blueprint.get("/p/<token>")
def preferences_page(token: str):
    with database() as session:
        subscriber = _preferences_subscriber(session, token)
        if subscriber is None:
            return not_found()
        return _preferences(session, subscriber, request.path)


@blueprint.post("/p/<token>")
def save_preferences(token: str):
    form = request.form
    with database() as session:
        subscriber = _preferences_subscriber(session, token)
        if subscriber is None:
            return not_found()
        if security.csrf_problem():
            return _preferences(session, subscriber, request.path, status=400,
                                notice="This form had expired, so nothing was changed. Please make your choices again.")
        if form.get("action") == "leave":
            subscribers.unsubscribe(session, subscriber.email)
            return message("You have left every list", "You will get no more emails from us.",
                           "If this was a mistake, you can choose lists again on this page.",
                           link=(request.path, "Back to your choices"))
        wanted = set(form.getlist("list"))
        _apply_choices(session, subscriber, {c.mailing_list.id for c in _choices(session, subscriber)
                                             if str(c.mailing_list.id) in wanted})
        session.commit()
        return _preferences(session, subscriber, request.path, notice="Your choices are saved.")


def _preferences_subscriber(session: Session, token: str) -> Subscriber | None:
    try:
        subscriber_id = int(read_token(settings(), PREFERENCES, token))
    except (BadToken, TypeError, ValueError):
        return None
    subscriber = subscribers.subscriber_by_id(session, subscriber_id)
    return subscriber if subscriber is not None and subscriber.status != "erased" else None


def _preferences(session: Session, subscriber: Subscriber, action: str, *, status: int = 200, notice: str = ""):
    choices = _choices(session, subscriber)
    publications = {c.mailing_list.publication_id: None for c in choices}
    rows = {p.id: p for p in session.scalars(select(PublicationRow).where(PublicationRow.id.in_(publications)))}
    grouped = [(rows[pid], [c for c in choices if c.mailing_list.publication_id == pid]) for pid in publications]
    return page("preferences.html", status, publication=grouped[0][0] if len(grouped) == 1 else None,
                groups=grouped, action=action, notice=notice, left_everything=subscriber.status != "active")


def _choices(session: Session, subscriber: Subscriber) -> list[ListChoice]:
    """Every list of the publications the person has ever been on, and whether they get it."""
    statuses = dict(session.execute(
        select(Membership.list_id, Membership.status).where(Membership.subscriber_id == subscriber.id)
    ).all())
    publication_ids = select(MailingList.publication_id).where(MailingList.id.in_(statuses))
    lists = session.scalars(
        select(MailingList).where(MailingList.publication_id.in_(publication_ids))
        .order_by(MailingList.publication_id, MailingList.name)
    ).all()
    active = subscriber.status == "active"
    return [ListChoice(m, active and statuses.get(m.id) == "confirmed") for m in lists]


def _apply_choices(session: Session, subscriber: Subscriber, wanted: set[int]) -> None:
    # The link came to this person's mailbox, so a list they tick here is
    # confirmed at once; one they untick is left, as an unsubscribe would.
    now = utcnow()
    memberships = {m.list_id: m for m in session.scalars(
        select(Membership).where(Membership.subscriber_id == subscriber.id))}
    for choice in _choices(session, subscriber):
        list_id = choice.mailing_list.id
        membership = memberships.get(list_id)
        if list_id in wanted and (membership is None or membership.status != "confirmed"):
            if membership is None:
                session.add(Membership(list_id=list_id, subscriber_id=subscriber.id, status="confirmed",
                                       created_at=now, updated_at=now))
            else:
                membership.status, membership.updated_at = "confirmed", now
        elif list_id not in wanted and membership is not None and membership.status != "unsubscribed":
            membership.status, membership.updated_at = "unsubscribed", now
    if wanted and subscriber.status == "unsubscribed":
        subscriber.status = "active"
    session.flush()
