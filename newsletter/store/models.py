"""The system of record: SQLAlchemy 2 models.

Schema changes go through Alembic (``newsletter/store/migrations``); tests
check that the migrations and these models agree. The tables come in the
order of the pipeline, a section each: publications and issues, the audience,
sends and their ledger, feedback, ops, accounts, and the console's own.

It is one module of more than 450 lines on purpose: the schema is read, and
compared with the migrations, as a whole, and one file keeps every foreign
key next to the table it points at.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


# --- Publications and issues: what is sent --------------------------------------------------------


class PublicationRow(Base):
    __tablename__ = "publications"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    from_name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str] = mapped_column(String(320))
    postal_address: Mapped[str] = mapped_column(Text)
    web_base_url: Mapped[str] = mapped_column(String(500))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/London")
    language: Mapped[str] = mapped_column(String(35), default="en-GB")
    settings: Mapped[dict] = mapped_column(JSON, default=dict)  # colours, logo, why_receiving
    # The publication.yaml `sending:` block without secrets (authoring/sending_block.py).
    sending: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IssueRow(Base):
    """A built issue: what every recipient's message is made from."""

    __tablename__ = "issues"
    __table_args__ = (UniqueConstraint("publication_id", "slug"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id"))
    slug: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    issue_date: Mapped[date] = mapped_column(Date)
    html: Mapped[str] = mapped_column(Text)  # compiled, with per-recipient placeholders
    text: Mapped[str] = mapped_column(Text)  # with per-recipient placeholders
    mjml: Mapped[str] = mapped_column(Text, default="")
    web_html: Mapped[str] = mapped_column(Text, default="")  # the public copy, no personal data
    articles: Mapped[dict] = mapped_column(JSON, default=dict)  # slug -> public article HTML
    content_hash: Mapped[str] = mapped_column(String(64))
    source_folder: Mapped[str] = mapped_column(Text, default="")
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- Audience: lists, subscribers, segments, suppressions, sign-up --------------------------------


class MailingList(Base):
    __tablename__ = "lists"
    __table_args__ = (UniqueConstraint("publication_id", "slug"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id"))
    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _email_key(context) -> str:
    from newsletter.addresses import address_key

    return address_key(context.get_current_parameters()["email"])


class Subscriber(Base):
    """A person, once per address across the whole install.

    ``status``: active | unsubscribed (left everything) | erased.
    ``email`` is the address as normalised when it was first given (shown and
    sent to); ``email_key`` is who the person is (``addresses.address_key``):
    ``Someone@example.org`` and ``someone@example.org`` are one subscriber.
    """

    __tablename__ = "subscribers"
    __table_args__ = (
        Index("ix_subscribers_email_key", "email_key", unique=True),
        Index("ix_subscribers_created_at", "created_at"),  # segments: joined before / after / on
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised
    email_key: Mapped[str] = mapped_column(String(320), default=_email_key)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="active")
    # JSONB on PostgreSQL: segments read custom fields from it row by row, and
    # JSONB needs no parsing to do so (about twice as fast as JSON text).
    attributes: Mapped[dict] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), default=dict)
    source: Mapped[str] = mapped_column(String(40), default="cli")  # cli | import | signup
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SubscriberMerge(Base):
    """A subscriber merged into another (the same person under another spelling).

    Links in emails already sent carry the merged id; they are followed to
    the kept subscriber, so an old unsubscribe link still works.
    """

    __tablename__ = "subscriber_merges"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    merged_id: Mapped[int] = mapped_column(Id, unique=True)
    kept_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Segment(Base):
    """A saved, named condition on subscribers (``segments.py`` reads and runs it)."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("publication_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id"))
    name: Mapped[str] = mapped_column(String(100))
    condition: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Membership(Base):
    """A subscriber on a list. ``status``: unconfirmed | confirmed | unsubscribed."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("list_id", "subscriber_id"),
        Index("ix_memberships_list_status_subscriber", "list_id", "status", "subscriber_id"),
        Index("ix_memberships_subscriber_id", "subscriber_id"),  # a person's lists; erasure
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="confirmed")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Suppression(Base):
    """An address that must never be sent to again, whatever its lists say.

    ``reason``: hard_bounce | complaint | soft_bounce | manual | erased.
    ``email`` holds the normalised address, or a SHA-256 of it after erasure.
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConfirmationEmail(Base):
    """When an address was last sent a link to confirm a subscription.

    One row per subscriber, so at most one confirmation email goes to an
    address per ``signup_email_window_seconds`` however often the sign-up form
    is posted with it (by the person, or by someone else trying to flood them).
    """

    __tablename__ = "confirmation_emails"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), unique=True)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    emails_sent: Mapped[int] = mapped_column(Integer, default=0)


# --- Sends and the ledger: an issue going to lists, one row per recipient -------------------------


class SendState(StrEnum):
    """A send's state (``Send.state``). Members are the strings stored, and equal them."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    """A batch's state (``Batch.state``): see ``Batch``."""

    QUEUED = "queued"
    DONE = "done"
    WAITING = "waiting"
    HELD = "held"
    PACED = "paced"


class DeliveryState(StrEnum):
    """A ledger row's state (``Delivery.state``): see ``Delivery``."""

    PENDING = "pending"
    CLAIMED = "claimed"
    SENDING = "sending"
    RETRY = "retry"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# A row a run holds under its lease: claimed, or handed to the transport (sending).
ACTIVE_ROW_STATES = (DeliveryState.CLAIMED, DeliveryState.SENDING)
# A row whose recipient may still get the message: a send is finished when it has none.
UNFINISHED_ROW_STATES = (DeliveryState.PENDING, *ACTIVE_ROW_STATES, DeliveryState.RETRY)
FINAL_ROW_STATES = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED, DeliveryState.CANCELLED)


class Send(Base):
    """An issue going to a list at a time.

    scheduled -> sending -> finished, with paused and cancelled on the way.
    A beat tick claims a due send by moving it from scheduled to sending in one
    conditional UPDATE, so two beats never start the same send.
    """

    __tablename__ = "sends"
    __table_args__ = (Index("ix_sends_state_scheduled_at", "state", "scheduled_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id"))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))
    state: Mapped[str] = mapped_column(String(20), default=SendState.SCHEDULED)
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    audience_size: Mapped[int] = mapped_column(Integer, default=0)
    batch_size: Mapped[int] = mapped_column(Integer, default=200)
    paused_reason: Mapped[str] = mapped_column(Text, default="")
    last_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A send to a segment keeps the condition as it was when scheduled: the
    # audience frozen at the start is the one that was shown and approved.
    segment_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    segment_condition: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The operator let this send go out with links that are not https and public.
    allow_private_links: Mapped[bool] = mapped_column(Boolean, default=False)
    # The operator asked for the issue to go again to people who already had it
    # from an earlier send (see ``Delivery.resend``).
    resend: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The error budget's current window (newsletter/sending/records.py): the
    # results of this send counted as each chunk is recorded, by every worker.
    budget_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    budget_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SendList(Base):
    """One of the lists a send goes to. A send to one list may have no rows
    here (sends made before there could be several): ``Send.list_id`` is then
    its list. ``Send.list_id`` is always the first of them (List-Id header)."""

    __tablename__ = "send_lists"
    __table_args__ = (UniqueConstraint("send_id", "list_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))


class Batch(Base):
    """A keyset page of a send's ledger: deliveries with first_id <= id <= last_id.

    A batch task carries only the batch id. ``state``: queued | done |
    waiting (to be enqueued at the next beat tick: its send was resumed, or a
    run gave its rows back) | held (a run gave its rows back rather than wait
    for its account's rate limit while other work needed the worker) | paced
    (a held batch handed out again, one at a time per send; see
    sending.lifecycle.batches_to_requeue). ``enqueued_at`` lets the beat tick re-enqueue a
    batch whose task was lost (a broker restart), whose rows wait for a retry,
    or whose holder's lease lapsed.
    """

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("send_id", "first_delivery_id"), Index("ix_batches_state_send_id", "state", "send_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"), index=True)
    first_delivery_id: Mapped[int] = mapped_column(Id)
    last_delivery_id: Mapped[int] = mapped_column(Id)
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default=BatchState.QUEUED)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    times_enqueued: Mapped[int] = mapped_column(Integer, default=1)
    # When a run last began on it (the database's clock): a batch enqueued since
    # and never begun, while the queue is empty, was lost by the broker.
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# A ledger row that gives its person the issue, or may still: every row but an
# explicit resend and those that ended without a copy (skipped, cancelled). The
# database keeps one such row per issue and person (ONE_COPY_INDEX),
# whatever sends and lists the issue went to. A row never comes back from
# skipped or cancelled, so only an INSERT (a freeze) can meet the rule.
HOLDS_ISSUE = "NOT resend AND state NOT IN ('cancelled', 'skipped')"
ONE_COPY_INDEX = "uq_deliveries_issue_subscriber"
# How ``last_error`` of a row failed by a policy refusal (5.7.x) begins: the
# sender or the content was refused, not the address. Such a row is sent again
# when its send is resumed (sending.scheduling.resume).
POLICY_REFUSAL = "refused by the server's policy, not for the address"


class Delivery(Base):
    """The ledger: one row per send and subscriber. It alone decides who was sent.

    pending -> claimed -> sending -> sent | failed | retry (-> claimed ...);
    skipped when the address was suppressed or unsubscribed at claim time;
    cancelled when the send was cancelled first. ``possible_duplicate`` marks a
    row that was handed to the transport by a worker that died (or lost its
    claim) before it could record the answer, and was then sent again.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("send_id", "subscriber_id"),
        Index("ix_deliveries_send_state", "send_id", "state"),
        # One copy of an issue per person, across all its sends: see HOLDS_ISSUE.
        Index(ONE_COPY_INDEX, "issue_id", "subscriber_id", unique=True,
              postgresql_where=text(HOLDS_ISSUE), sqlite_where=text(HOLDS_ISSUE)),
        # A person's rows (erasure; deleting a subscriber sets them to NULL, found by it).
        Index("ix_deliveries_subscriber_id", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"))
    # The send's issue, copied here so that the database itself keeps one copy of
    # an issue per person (no foreign key: the send's already is, and a freeze
    # of a million rows would check it a million times).
    issue_id: Mapped[int] = mapped_column(Id)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True)
    email: Mapped[str] = mapped_column(String(320))  # frozen with the audience
    state: Mapped[str] = mapped_column(String(20), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(300), default="")
    provider_message_id: Mapped[str] = mapped_column(String(300), default="")
    claimed_by: Mapped[str] = mapped_column(String(200), default="")
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    # Copies beyond the first that may have reached the person: one for each
    # time the row was taken over, or given back, while it was at the transport
    # (less those the run that had it knows went nowhere), or that broke off
    # after the message went out. ``possible_duplicate`` is set whenever this is above 0.
    extra_copies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # An extra copy the operator asked for (a send scheduled with --resend) to a
    # person who already had the issue; such rows stand outside the one-copy rule.
    resend: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Which transport and account the row was last handed to ("" before it was).
    transport: Mapped[str] = mapped_column(String(20), default="", server_default="")
    account: Mapped[str] = mapped_column(String(200), default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# Provider events name a message by the id the provider gave when it took it.
Index("ix_deliveries_provider_message_id", Delivery.provider_message_id)
# Erasure finds the rows of an address whose subscriber is gone (deleted, or
# never one) by the address in any case (audience/erasure.py). Partial: a row
# enters it only when its subscriber is deleted, so freezing a send pays nothing.
Index("ix_deliveries_orphan_email", func.lower(Delivery.email),
      sqlite_where=Delivery.subscriber_id.is_(None), postgresql_where=Delivery.subscriber_id.is_(None))


class SendEvent(Base):
    """What happened to a send, for people: started, paused (and why), resumed..."""

    __tablename__ = "send_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ClaimLease(Base):
    """A batch run's lease on the ledger rows it claimed (newsletter/sending/leases.py).

    The run renews ``expires_at`` while it makes progress. Rows whose
    ``claimed_by`` has no lease that is still valid belong to nobody: the next
    worker that claims their batch takes them over.
    """

    __tablename__ = "claim_leases"

    holder: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:nonce/run
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[int] = mapped_column(Id)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# --- Feedback: what providers and the bounce mailbox report, and clicks ---------------------------


class ProviderEvent(Base):
    """One thing a provider or a bounce mailbox told us about one message.

    ``kind``: delivered | bounced | complained | unsubscribed; ``bounce``: hard,
    soft or blocked (5.7.x, the sender or content refused) for bounced. ``(source, key)`` is unique: the same event arriving
    twice is recorded once. ``raw`` (the payload, for debugging) is emptied
    after ``raw_event_retention_days``; the normalised fields are kept.
    """

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("source", "key"),
        Index("ix_provider_events_email_kind", "email", "kind", "occurred_at"),
        Index("ix_provider_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(40))  # ses | sendgrid | mailgun | postmark | mailbox
    key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    bounce: Mapped[str] = mapped_column(String(10), default="")
    email: Mapped[str] = mapped_column(String(320))
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True, index=True
    )
    message_ref: Mapped[str] = mapped_column(String(300), default="")  # the message, to count soft bounces
    detail: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookNonce(Base):
    """A signed webhook's one-time token, and the token with its content's
    fingerprint, kept while its signature is still fresh: a captured token on
    other content is refused (webhooks.remember_nonce)."""

    __tablename__ = "webhook_nonces"
    __table_args__ = (UniqueConstraint("source", "nonce"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    nonce: Mapped[str] = mapped_column(String(200))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# --- Clicks: counts, never people (docs/clicks.md) ------------------------------------


class ClickCount(Base):
    """Clicks on one counted link of a send in one hour, by class (feedback/clicks.py).

    Link 0 is the trap link nobody can see. No row names a person or a client address.
    """

    __tablename__ = "click_counts"

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    link: Mapped[int] = mapped_column(Integer, primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    human: Mapped[int] = mapped_column(Integer, default=0)
    machine: Mapped[int] = mapped_column(Integer, default=0)
    unsure: Mapped[int] = mapped_column(Integer, default=0)


class ClickMessage(Base):
    """Clicks from one message of a send, known only by the random nonce in its links:
    how many distinct messages had a human click, without knowing whose."""

    __tablename__ = "click_messages"

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(16), primary_key=True)
    human: Mapped[int] = mapped_column(Integer, default=0)
    machine: Mapped[int] = mapped_column(Integer, default=0)
    unsure: Mapped[int] = mapped_column(Integer, default=0)


class PageView(Base):
    """Views of one web copy page on one day (no cookies, no addresses)."""

    __tablename__ = "page_views"

    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(300), primary_key=True)  # "<issue>/" or "<issue>/<article>/"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    views: Mapped[int] = mapped_column(Integer, default=0)


class ClickHistory(Base):
    """One person's click, kept only for a publication with ``sending.clicks: per_person``
    (a lawful basis of its own); erasure removes it with the person."""

    __tablename__ = "click_history"
    __table_args__ = (Index("ix_click_history_subscriber", "subscriber_id", "clicked_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), index=True)
    link: Mapped[int] = mapped_column(Integer)
    clicked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(10))  # human | machine | unsure


# --- Ops: what workers report about themselves, and the queues over time (`newsletter ops`, /metrics) ---


class WorkerHeartbeat(Base):
    """A worker process's latest word about itself, written every few seconds.

    Workers write here rather than being asked: reading a table is fast and
    works the same with Redis or the embedded broker. ``state``: running |
    stopped (a clean shutdown); a running row whose ``last_seen_at`` is old
    belongs to a worker that is gone.
    """

    __tablename__ = "worker_heartbeats"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    node: Mapped[str] = mapped_column(String(200), unique=True)  # Celery's name@host
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(500))  # comma-separated
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    active_tasks: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BatchRun(Base):
    """One run of a batch task: how long it took and what it did."""

    __tablename__ = "batch_runs"
    __table_args__ = (Index("ix_batch_runs_finished_at", "finished_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Id, index=True)
    send_id: Mapped[int] = mapped_column(Id, index=True)
    worker: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float] = mapped_column(Float)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    retry: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    stopped: Mapped[str] = mapped_column(String(40), default="")


class RateLimitThrottle(Base):
    """How often a provider account was asked to slow down (SMTP 421, HTTP 429), for /metrics.

    One row per account, counted once per chunk of messages that met a throttle.
    """

    __tablename__ = "rate_limit_throttles"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    throttles: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QueueSample(Base):
    """How many messages waited in the broker's queues at one moment.

    The broker keeps no history, so the beat tick samples it about once a
    minute for the dashboard's chart; samples older than a day are dropped.
    """

    __tablename__ = "queue_samples"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    depth: Mapped[int] = mapped_column(Integer)  # all queues together
    depths: Mapped[dict] = mapped_column(JSON, default=dict)  # queue name -> depth


# --- Accounts: operators and editors, their roles and sessions, the audit log ---------------------


class Admin(Base):
    """An operator who may log in to the ops dashboard (created with `newsletter admins`).

    ``password_hash`` is werkzeug's salted scrypt; the password itself is never kept.
    """

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Accounts made with `newsletter admins create` manage accounts and publications;
    # invited ones hold only the roles given to them per publication.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # revoked by an admin


ROLES = ("editor", "approver", "operator")


class AccountRole(Base):
    """One role of one account in one publication: editor, approver or operator."""

    __tablename__ = "account_roles"
    __table_args__ = (UniqueConstraint("admin_id", "publication_id", "role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))


class WebSession(Base):
    """A logged-in browser. The cookie holds a random token; only its SHA-256 is kept,
    and deleting the row (logout, a new password, a revoked account) ends the session."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    client: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginClient(Base):
    """An address an account has logged in from: the per-account login limit lets it through."""

    __tablename__ = "login_clients"
    __table_args__ = (UniqueConstraint("admin_id", "client_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"))
    client_key: Mapped[str] = mapped_column(String(64))  # a keyed hash of the address
    last_login_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Who did what, when, from which address: every action in the console and the dashboard."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))  # an account's address, or "cli"
    action: Mapped[str] = mapped_column(String(60))
    detail: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(100), default="")
    publication_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    draft_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


# --- The console: issues written in the browser, CSV imports started there ------------------------


DRAFT_STATES = ("draft", "awaiting approval", "approved")


class Draft(Base):
    """An issue written in the console: its section files are DraftFile rows.

    ``state`` is the approval's: draft -> awaiting approval -> approved; once
    scheduled, ``issue_id`` names the stored issue and its sends tell the rest.
    ``version`` grows with every save of any of its files.
    """

    __tablename__ = "drafts"
    __table_args__ = (UniqueConstraint("publication_id", "slug"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id"))
    slug: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300), default="")
    state: Mapped[str] = mapped_column(String(30), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    editors: Mapped[list] = mapped_column(JSON, default=list)  # addresses of everyone who saved it
    created_by: Mapped[str] = mapped_column(String(320), default="")
    submitted_by: Mapped[str] = mapped_column(String(320), default="")
    approved_by: Mapped[str] = mapped_column(String(320), default="")
    rejection: Mapped[str] = mapped_column(Text, default="")  # the approver's comment
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id"), nullable=True)
    findings: Mapped[list] = mapped_column(JSON, default=list)  # the last check's, for the page
    errors: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DraftFile(Base):
    """One file of a draft (issue.yaml, a section file, an image), with its own version."""

    __tablename__ = "draft_files"
    __table_args__ = (UniqueConstraint("draft_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str] = mapped_column(String(320), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublicationFile(Base):
    """A file of a publication's folder (publication.yaml, its logo, templates/...),
    kept so that every web process can lay out an issue folder the CLI would accept."""

    __tablename__ = "publication_files"
    __table_args__ = (UniqueConstraint("publication_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Picture(Base):
    """A picture in a publication's library (``console/pictures.py``): uploaded once, with
    its description (alt text), and copied into an issue's folder when a section picks it."""

    __tablename__ = "pictures"
    __table_args__ = (UniqueConstraint("publication_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))  # the file name a section's src gives
    data: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)  # a PNG at most THUMBNAIL pixels a side
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    alt: Mapped[str] = mapped_column(Text, default="")  # "" for a picture that is only decoration
    uploaded_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportJob(Base):
    """A CSV file uploaded in the console, on its way into a list (``console/imports.py``).

    ``state``: uploaded (waiting for its column mapping) -> waiting (for a
    worker) -> running -> finished | failed. The file is kept in ``data`` only
    until the import has run (or an unstarted upload expires), then set to
    NULL. ``rows_done``/``rows_total`` count the rows written, for the
    progress bar; ``problems`` holds the rejected rows (line, column, severity,
    problem, what to do).
    """

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), index=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[list] = mapped_column(JSON, default=list)  # the header as uploaded
    mapping: Mapped[list] = mapped_column(JSON, default=list)  # what each column becomes
    join_status: Mapped[str] = mapped_column(String(20), default="confirmed")
    state: Mapped[str] = mapped_column(String(20), default="uploaded", index=True)
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    not_resubscribed: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[list] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(Text, default="")
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # runs started (imports.TRIES)
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # progress moves it
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
