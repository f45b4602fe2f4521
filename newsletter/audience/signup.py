"""Sign-up with double opt-in: ask, get one email, confirm from it.

A sign-up creates the subscriber (if new) and an *unconfirmed* membership,
and sends a small transactional email with a signed, expiring confirm link.
Unconfirmed people never receive an issue (sending freezes confirmed
memberships only). The link moves the membership to confirmed.

Two limits keep the form from being used to flood someone's inbox or our
sending reputation:

- at most one confirmation email per address per ``signup_email_window_seconds``
  (a row per subscriber in ``confirmation_emails``, claimed by a conditional
  UPDATE so two requests at once send one email);
- at most ``signup_requests_per_client`` posts per client address per
  ``signup_client_window_seconds`` (a fixed-window counter in Redis when it is
  configured, in memory otherwise).

Nothing a sign-up does tells the person filling in the form whether the
address was already subscribed: every accepted address gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import address_key, wire_address
from newsletter.authoring.message import recipient_header
from newsletter.config import Settings
from newsletter.errors import InputError, NewsletterError, NotFound, Problem
from newsletter.store.models import (
    ConfirmationEmail,
    Delivery,
    MailingList,
    Membership,
    PublicationRow,
    Subscriber,
    utcnow,
)
from newsletter.store.upsert import insert_ignore
from newsletter.store.publications import settings_for
from newsletter.audience.subscribers import checked_address, checked_name, subscriber_by_id
from newsletter.audience.suppressions import is_suppressed
from newsletter.audience.tokens import CONFIRM, BadToken, make_token, read_token
from newsletter.transports import SENT, Envelope, Transport, make_transport, why_never_delivered

# What request_subscription did; the web page is the same for all of them.
EMAIL_SENT = "email_sent"
RECENTLY_SENT = "recently_sent"  # an email went out within the window: none now
SUPPRESSED = "suppressed"  # the address bounced or complained: never mailed

# What confirm_subscription found.
CONFIRMED = "confirmed"
ALREADY_CONFIRMED = "already_confirmed"
LEFT_SINCE = "left_since"  # the person unsubscribed after this link was sent

# A max_age that lets an expired (but genuine) confirm link be read, to offer a new one.
ANY_AGE = 100 * 365 * 24 * 3600


class ConfirmationNotSent(NewsletterError):
    """The confirmation email could not be handed over; the person should try later."""


@dataclass(frozen=True)
class ConfirmResult:
    outcome: str  # CONFIRMED | ALREADY_CONFIRMED | LEFT_SINCE
    publication: PublicationRow
    mailing_list: MailingList


# --- asking ------------------------------------------------------------------


def find_list(session: Session, publication_slug: str, list_slug: str) -> tuple[PublicationRow, MailingList]:
    """The publication and list a sign-up page is for, or NotFound."""
    found = session.execute(
        select(PublicationRow, MailingList)
        .join(MailingList, MailingList.publication_id == PublicationRow.id)
        .where(PublicationRow.slug == publication_slug, MailingList.slug == list_slug)
    ).first()
    if found is None:
        raise NotFound(f"no list {list_slug!r} in publication {publication_slug!r}")
    return found[0], found[1]


def request_subscription(
    session: Session,
    settings: Settings,
    publication_slug: str,
    list_slug: str,
    email: str,
    name: str = "",
    *,
    transport: Transport | None = None,
) -> str:
    """Record a wish to join a list and email a confirm link; returns what happened.

    Raises InputError for a bad address or name (nothing is written),
    NotFound for an unknown list, ConfirmationNotSent when the email could
    not be handed over (the person may try again at once). Commits.
    """
    problems = []
    try:
        address = checked_address(email)
    except InputError as exc:
        problems += exc.problems
    try:
        name = checked_name(name)
    except InputError as exc:
        problems += exc.problems
    if problems:
        raise InputError(problems)
    publication, mailing_list = find_list(session, publication_slug, list_slug)
    if never := why_never_delivered(settings_for(settings, publication).transport, address):
        raise InputError(Problem("field email", never, "use another address"))
    if is_suppressed(session, address):
        return SUPPRESSED
    subscriber = _subscriber_for(session, address, name)
    if subscriber.status == "erased":
        return SUPPRESSED
    _join_unconfirmed(session, subscriber.id, mailing_list.id)
    session.commit()
    return _send_confirmation(session, settings, publication, mailing_list, subscriber, transport)


def renew_confirmation(session: Session, settings: Settings, token: str, *, transport: Transport | None = None) -> str:
    """Send a fresh confirm link for the subscription an (expired) link was for."""
    subscriber, mailing_list = confirmation_target(session, settings, token, max_age=ANY_AGE)[:2]
    publication = session.get(PublicationRow, mailing_list.publication_id)
    if is_suppressed(session, subscriber.email):
        return SUPPRESSED
    return _send_confirmation(session, settings, publication, mailing_list, subscriber, transport)


def _subscriber_for(session: Session, address: str, name: str) -> Subscriber:
    # An existing person's name is not changed: whoever fills in the form may
    # not be the owner of the address.
    now = utcnow()
    key = address_key(address)
    session.execute(insert_ignore(session, Subscriber, [{
        "email": address, "email_key": key, "name": name, "status": "active", "attributes": {}, "source": "signup",
        "created_at": now, "updated_at": now,
    }], ["email_key"]))
    return session.scalars(select(Subscriber).where(Subscriber.email_key == key)).one()


def _join_unconfirmed(session: Session, subscriber_id: int, list_id: int) -> None:
    # An existing membership keeps its status: confirmed stays confirmed, and
    # someone who left stays out until the link in their own mailbox says otherwise.
    now = utcnow()
    session.execute(insert_ignore(session, Membership, [{
        "list_id": list_id, "subscriber_id": subscriber_id, "status": "unconfirmed",
        "created_at": now, "updated_at": now,
    }], ["list_id", "subscriber_id"]))


# --- one email per address per window ------------------------------------------


def _send_confirmation(session, settings, publication, mailing_list, subscriber, transport) -> str:
    now = utcnow()
    previous = _claim_email_slot(session, subscriber.id, now, settings.signup_email_window_seconds)
    if previous is False:
        return RECENTLY_SENT
    session.commit()  # the slot is ours before the email goes out
    token = make_token(settings, CONFIRM, [subscriber.id, mailing_list.id, int(now.timestamp() * 1000)])
    # The publication's own web address in the link, and its own transport.
    envelope = confirmation_envelope(settings_for(settings, publication), publication, mailing_list, subscriber, token)
    error = _hand_over(settings, publication, envelope, transport)
    if error:
        _release_email_slot(session, subscriber.id, previous)
        session.commit()
        raise ConfirmationNotSent(f"the confirmation email to {subscriber.email} could not be sent: {error}")
    return EMAIL_SENT


def _claim_email_slot(session: Session, subscriber_id: int, now: datetime, window_seconds: int):
    """The previous send time (None if never) when we may email now; False if not."""
    row = session.scalars(select(ConfirmationEmail).where(ConfirmationEmail.subscriber_id == subscriber_id)).first()
    if row is None:
        # RETURNING, not rowcount: PostgreSQL reports no count for this INSERT.
        inserted = session.execute(insert_ignore(session, ConfirmationEmail, [
            {"subscriber_id": subscriber_id, "last_sent_at": now, "emails_sent": 1}], ["subscriber_id"])
            .returning(ConfirmationEmail.id)).first()
        return None if inserted is not None else False  # else someone claimed it just now
    previous = row.last_sent_at
    claimed = session.execute(
        update(ConfirmationEmail)
        .where(ConfirmationEmail.id == row.id, ConfirmationEmail.last_sent_at == previous,
               ConfirmationEmail.last_sent_at <= now - timedelta(seconds=window_seconds))
        .values(last_sent_at=now, emails_sent=ConfirmationEmail.emails_sent + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    return previous if claimed == 1 else False


def _release_email_slot(session: Session, subscriber_id: int, previous: datetime | None) -> None:
    # The email did not go out: let the person ask again at once.
    slot = ConfirmationEmail.subscriber_id == subscriber_id
    if previous is None:
        session.execute(delete(ConfirmationEmail).where(slot))
    else:
        session.execute(update(ConfirmationEmail).where(slot).values(
            last_sent_at=previous, emails_sent=ConfirmationEmail.emails_sent - 1))


def _hand_over(settings: Settings, publication: PublicationRow, envelope: Envelope, transport: Transport | None) -> str:
    """"" when the transport took the message, else why not."""
    own = transport is None
    try:
        transport = transport or make_transport(settings_for(settings, publication, secrets=True))
        [result] = transport.send_many([envelope])
    except Exception as exc:  # noqa: BLE001 - a misconfigured transport must not show a traceback
        return str(exc) or type(exc).__name__
    finally:
        if own and transport is not None:
            transport.close()
    return "" if result.status == SENT else (result.error or result.status)


# --- the email -------------------------------------------------------------------


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/confirm/{token}"


def confirmation_envelope(settings, publication: PublicationRow, mailing_list: MailingList,
                          subscriber: Subscriber, token: str) -> Envelope:
    """A small transactional message: one link, no tracking, no issue content."""
    domain = publication.from_email.rsplit("@", 1)[-1].lower()
    message = EmailMessage()
    message["From"] = Address(publication.from_name, addr_spec=publication.from_email)
    to = wire_address(subscriber.email)  # the domain in IDNA form; a local part beyond ASCII as UTF-8 (SMTPUTF8)
    if publication.reply_to:
        message["Reply-To"] = publication.reply_to
    message["Subject"] = f"Please confirm your subscription to {publication.name}"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid("confirm", domain=domain)
    # RFC 3834: no vacation replies to a message a machine sent.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_confirmation_text(settings, publication, mailing_list, subscriber, token))
    name = " ".join(subscriber.name.split())
    return Envelope(delivery_id=0, sender=publication.from_email, recipient=to,
                    message=recipient_header(name, to) + message.as_bytes(policy=message.policy.clone(linesep="\r\n")),
                    message_id=message["Message-ID"])


def _confirmation_text(settings, publication, mailing_list, subscriber, token) -> str:
    days = max(1, settings.confirm_max_age_seconds // 86400)
    return (
        f"Hello {subscriber.name or 'there'},\n\n"
        f"Someone, probably you, asked for \"{mailing_list.name}\" from {publication.name} "
        "to be sent to this address.\n\n"
        f"To confirm, open this link within {days} day{'s' if days != 1 else ''}:\n\n"
        f"{confirm_url(settings, token)}\n\n"
        "If it was not you, ignore this email: without a confirmation you will get nothing more from us.\n\n"
        f"{publication.name}\n{publication.postal_address}\n"
    )


# --- confirming ------------------------------------------------------------------


def confirm_subscription(session: Session, settings: Settings, token: str) -> ConfirmResult:
    """Act on a confirm link: BadToken if it is not valid or has expired. Commits."""
    subscriber, mailing_list, membership, issued_at = confirmation_target(
        session, settings, token, max_age=settings.confirm_max_age_seconds
    )
    publication = session.get(PublicationRow, mailing_list.publication_id)
    if membership.status == "confirmed" and subscriber.status == "active":
        return ConfirmResult(ALREADY_CONFIRMED, publication, mailing_list)
    if membership.status == "unsubscribed" and membership.updated_at >= issued_at:
        # They left after asking: an old link in their mailbox must not undo that.
        return ConfirmResult(LEFT_SINCE, publication, mailing_list)
    now = utcnow()
    membership.status, membership.updated_at = "confirmed", now
    if subscriber.status == "unsubscribed":  # they left everything once; now they ask back in
        subscriber.status = "active"
    session.commit()
    return ConfirmResult(CONFIRMED, publication, mailing_list)


def confirmation_target(session: Session, settings: Settings, token: str, max_age: int | None = None):
    """(subscriber, list, membership, when the link was sent) of a confirm link, or BadToken.

    ``max_age`` defaults to the configured life of a confirm link.
    """
    if max_age is None:
        max_age = settings.confirm_max_age_seconds
    payload = read_token(settings, CONFIRM, token, max_age=max_age)
    try:
        subscriber_id, list_id, issued = (int(part) for part in payload)
    except (TypeError, ValueError):
        raise BadToken("this link is not valid") from None
    subscriber = subscriber_by_id(session, subscriber_id)  # merged since: the kept one
    mailing_list = session.get(MailingList, list_id)
    membership = session.scalars(
        select(Membership).where(Membership.subscriber_id == subscriber.id, Membership.list_id == list_id)
    ).first() if subscriber is not None else None
    if subscriber is None or mailing_list is None or membership is None or subscriber.status == "erased":
        raise BadToken("this link is not valid")  # the person or list was removed since
    issued_at = datetime.fromtimestamp(issued / 1000, tz=timezone.utc)
    return subscriber, mailing_list, membership, issued_at


# --- forgetting sign-ups that were never confirmed ---------------------------------


@dataclass(frozen=True)
class UnconfirmedPurge:
    memberships_deleted: int
    subscribers_deleted: int


def purge_unconfirmed(session: Session, settings: Settings, now: datetime | None = None) -> UnconfirmedPurge:
    """Delete unconfirmed memberships older than ``unconfirmed_retention_days``. Commits.

    An address someone typed into the form and never confirmed is not ours to
    keep. Its subscriber row goes too when nothing else is left: no other
    membership and no ledger row. Suppressions are kept by address and stay.
    Meant for the beat or ``newsletter subscribers purge-unconfirmed``; safe to repeat.
    """
    now = now or utcnow()
    # Never sooner than a confirm link lives: a link that still works finds its membership.
    cutoff = now - max(timedelta(days=settings.unconfirmed_retention_days),
                       timedelta(seconds=settings.confirm_max_age_seconds))
    recently_asked = select(ConfirmationEmail.subscriber_id).where(ConfirmationEmail.last_sent_at >= cutoff)
    stale = (Membership.status == "unconfirmed") & (Membership.created_at < cutoff) \
        & Membership.subscriber_id.not_in(recently_asked)
    candidates = list(session.scalars(select(Membership.subscriber_id).where(stale).distinct()))
    memberships = session.execute(delete(Membership).where(stale)).rowcount
    subscribers = sum(_delete_if_nothing_left(session, candidates[i:i + 500]) for i in range(0, len(candidates), 500))
    session.commit()
    return UnconfirmedPurge(memberships, subscribers)


def _delete_if_nothing_left(session: Session, subscriber_ids: list[int]) -> int:
    # One statement, so a sign-up arriving meanwhile keeps its subscriber;
    # the row in confirmation_emails goes with it (ON DELETE CASCADE).
    return session.execute(delete(Subscriber).where(
        Subscriber.id.in_(subscriber_ids),
        ~exists().where(Membership.subscriber_id == Subscriber.id),
        ~exists().where(Delivery.subscriber_id == Subscriber.id),
    ).execution_options(synchronize_session=False)).rowcount


# --- sign-up posts per client address ---------------------------------------------


class ClientLimit:
    """Sign-up posts per client address, in a moving window of the ``limits`` library.

    In Redis when it is configured, so every web process agrees; in memory
    otherwise. A Redis outage lets posts through: the one-email-per-address
    window still holds, and it must not stop people signing up.
    """

    def __init__(self, settings: Settings):
        self.limit = settings.signup_requests_per_client
        self.item = RateLimitItemPerSecond(max(1, self.limit), max(1, settings.signup_client_window_seconds))
        storage = storage_from_string(settings.redis_url, key_prefix="newsletter", wrap_exceptions=True,
                                      socket_connect_timeout=2, socket_timeout=2) \
            if settings.redis_url else MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)

    def allow(self, client: str) -> bool:
        """Count one post from ``client``; False once it is over the limit."""
        if self.limit <= 0:
            return True
        try:
            return self._limiter.hit(self.item, "signup", client)
        except StorageError:
            return True
