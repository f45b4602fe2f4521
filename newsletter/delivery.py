"""Delivering one batch: claim its ledger rows, personalise each message, hand
it to the transport, record each recipient's result.

A row left in ``sending`` by a worker that died may or may not have reached
the server. It is sent again (none lost) and flagged ``possible_duplicate``
(counted, never hidden).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from newsletter import dkim
from newsletter.bounces import verp_address
from newsletter.config import Settings
from newsletter.message import MessageTemplate, Recipient, make_message_id, publication_template
from newsletter.ratelimit import NullRateLimiter, RateLimiterUnavailable
from newsletter.scheduling import _record, list_ids_of
from newsletter.store.models import (
    Batch,
    MailingList,
    Delivery,
    IssueRow,
    Membership,
    PublicationRow,
    Send,
    Subscriber,
    utcnow,
)
from newsletter.tokens import preferences_url, unsubscribe_url
from newsletter.errors import InputError
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport

from newsletter.sending import ACTIVE_ROW_STATES
from newsletter.suppressions import add_suppression, suppressed_addresses

log = logging.getLogger(__name__)


def worker_identity() -> str:
    """host:pid:nonce; the nonce tells a restarted process from its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claimer_is_gone(claimed_by: str) -> bool:
    """True when the claiming process ran on this host and no longer exists.

    Claims from other hosts are only taken over once they are stale.
    """
    try:
        host, pid, _nonce = claimed_by.split(":")
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if int(pid) == os.getpid():
        return claimed_by != CURRENT_WORKER
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


CURRENT_WORKER = worker_identity()


# --- delivering a batch --------------------------------------------------------------


@dataclass
class BatchReport:
    batch_id: int
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    released: int = 0
    stopped: str = ""  # why the batch stopped early: paused, cancelled
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int | None
    email: str
    name: str
    attempts: int
    possible_duplicate: bool


class Deliverer:
    """Delivers batches for one worker process: one transport, one limiter,
    compiled issues cached, rows claimed under one identity."""

    def __init__(self, settings: Settings, transport: Transport, limiter=None, identity: str | None = None):
        self.settings = settings
        self.transport = transport
        self.limiter = limiter or NullRateLimiter()
        self.identity = identity or CURRENT_WORKER
        self._templates: dict[int, SendTemplate] = {}

    # The chunk is what is in flight at once: claimed rows are marked
    # "sending" a chunk at a time, so a crash leaves at most one chunk in doubt.
    # A provider API takes its own batch size; over SMTP, 25 a connection: each
    # chunk costs two commits and a ledger update, and lanes wait for the
    # slowest at its end; at 10 a worker sent ~12% fewer.
    @property
    def chunk_size(self) -> int:
        if self.transport.preferred_chunk:
            return self.transport.preferred_chunk
        return max(10, self.settings.smtp_connections * 25)

    def deliver_batch(self, session: Session, batch_id: int, now: datetime | None = None) -> BatchReport:
        """Send what is unfinished in one batch. Commits as it goes, chunk by chunk."""
        report = BatchReport(batch_id)
        batch = session.get(Batch, batch_id)
        if batch is None:
            report.stopped = "no such batch"
            return report
        send = session.get(Send, batch.send_id)
        if send.state != "sending":
            report.stopped = send.state
            return report
        claimed = self._claim(session, batch, now or utcnow())
        report.claimed = len(claimed)
        session.commit()
        claimed = self._skip_unwanted(session, send, claimed, report)
        session.commit()
        template = self._template(session, send)
        for start in range(0, len(claimed), self.chunk_size):
            chunk = claimed[start : start + self.chunk_size]
            state = session.scalar(select(Send.state).where(Send.id == send.id))
            if state != "sending":
                report.stopped = state
                report.released += self._release(session, send.id, claimed[start:], state)
                session.commit()
                break
            try:
                self._deliver_chunk(session, send, template, chunk, report)
            except RateLimiterUnavailable:
                # Nothing of this chunk went out: give the rows back at once
                # rather than leave them claimed until the claim goes stale.
                session.rollback()
                self._release(session, send.id, claimed[start:], "paused")
                session.commit()
                raise
            session.commit()
        self._close_batch(session, batch)
        self._check_error_budget(session, send, report)
        session.commit()
        return report

    def _claim(self, session: Session, batch: Batch, now: datetime) -> list[Claimed]:
        stale = now - timedelta(seconds=self.settings.claim_timeout_seconds)
        in_batch = and_(
            Delivery.send_id == batch.send_id,
            Delivery.id >= batch.first_delivery_id,
            Delivery.id <= batch.last_delivery_id,
        )
        holders = session.scalars(
            select(Delivery.claimed_by).where(in_batch, Delivery.state.in_(ACTIVE_ROW_STATES)).distinct()
        ).all()
        gone = [h for h in holders if h != self.identity and claimer_is_gone(h)]
        takeable = or_(
            Delivery.state == "pending",
            and_(Delivery.state == "retry", Delivery.next_attempt_at <= now),
            and_(
                Delivery.state.in_(ACTIVE_ROW_STATES),
                Delivery.claimed_by != self.identity,
                or_(Delivery.claimed_at < stale, Delivery.claimed_by.in_(gone)),
            ),
        )
        # A row that was already handed to the transport by a worker that died
        # may have been delivered: keep that in the ledger.
        rows = session.execute(
            update(Delivery)
            .where(in_batch, takeable)
            .values(
                state="claimed",
                claimed_by=self.identity,
                claimed_at=now,
                possible_duplicate=or_(Delivery.possible_duplicate, Delivery.state == "sending"),
                updated_at=now,
            )
            .returning(Delivery.id)
        ).scalars().all()
        if not rows:
            return []
        found = session.execute(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.email, Subscriber.name,
                Delivery.attempts, Delivery.possible_duplicate,
            )
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.id.in_(rows), Delivery.claimed_by == self.identity)
            .order_by(Delivery.id)
        ).all()
        return [Claimed(r[0], r[1], r[2], r[3] or "", r[4], bool(r[5])) for r in found]

    def _skip_unwanted(self, session: Session, send: Send, claimed: list[Claimed], report: BatchReport):
        """Honour unsubscribes and suppressions that happened after the freeze.

        Suppression is checked in Python, by every key that can stop the
        address (suppressions.lookup_keys): SQL cannot match the hashed entry
        an erasure of another case of the same address left.
        """
        if not claimed:
            return claimed
        ids = [c.delivery_id for c in claimed]
        still_members = set(
            session.scalars(
                select(Delivery.id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Membership, and_(Membership.subscriber_id == Subscriber.id,
                                       Membership.list_id.in_(list_ids_of(session, send))))
                .where(Delivery.id.in_(ids), Subscriber.status == "active", Membership.status == "confirmed")
            ).all()
        )
        suppressed = suppressed_addresses(session, [c.email for c in claimed])
        wanted = {c.delivery_id for c in claimed if c.delivery_id in still_members and c.email not in suppressed}
        unwanted = [i for i in ids if i not in wanted]
        if unwanted:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(unwanted), Delivery.claimed_by == self.identity)
                .values(state="skipped", last_error="unsubscribed or suppressed before sending", updated_at=utcnow())
            )
            report.skipped += len(unwanted)
        return [c for c in claimed if c.delivery_id in wanted]

    def _deliver_chunk(self, session: Session, send: Send, template, chunk: list[Claimed], report: BatchReport):
        envelopes, unbuildable = [], []
        for row in chunk:
            try:
                envelopes.append(template.envelope(send, row))
            except InputError as exc:  # e.g. a stored name that would break a header
                unbuildable.append(Result(row.delivery_id, PERMANENT, error=f"cannot build the message: {exc}"))
        self.limiter.acquire(len(envelopes))
        now = utcnow()
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([e.delivery_id for e in envelopes]), Delivery.claimed_by == self.identity)
            .values(state="sending", claimed_at=now, updated_at=now)
        )
        session.commit()  # from here on, a crash leaves these rows in doubt
        results = self.transport.send_many(envelopes) if envelopes else []
        self._record_results(session, send, chunk, envelopes, results, unbuildable, report)

    def _record_results(self, session, send, chunk, envelopes, results, unbuildable, report):
        now = utcnow()
        by_id = {c.delivery_id: c for c in chunk}
        message_ids = {e.delivery_id: e.message_id for e in envelopes}
        updates, suppress = [], []
        window_end = (send.started_at or now) + timedelta(seconds=self.settings.retry_window_seconds)
        for result in list(results) + unbuildable:
            row = by_id[result.delivery_id]
            attempts = row.attempts + 1
            values = {
                "id": row.delivery_id,
                "attempts": attempts,
                "message_id": message_ids.get(row.delivery_id, ""),
                "last_error": result.error[:2000],
                "claimed_by": "",
                "possible_duplicate": row.possible_duplicate,
                "updated_at": now,
                "provider_message_id": result.provider_message_id,
                "sent_at": None,
                "next_attempt_at": None,
            }
            if result.status == SENT:
                values.update(state="sent", sent_at=now)
                report.sent += 1
            elif result.status == TEMPORARY:
                delay = retry_delay(self.settings, attempts)
                retry_at = now + delay
                if result.uncertain:
                    values["possible_duplicate"] = True
                if attempts >= self.settings.retry_attempts or retry_at > window_end:
                    values.update(state="failed", last_error=f"gave up after {attempts} attempts: {result.error}"[:2000])
                    report.failed += 1
                else:
                    values.update(state="retry", next_attempt_at=retry_at)
                    report.retry += 1
                report.errors.append(result.error)
            else:
                values.update(state="failed")
                report.failed += 1
                report.errors.append(result.error)
                if result.hard_bounce:
                    suppress.append((row.email, result))
            updates.append(values)
        session.execute(update(Delivery), updates)
        for email, result in suppress:
            add_suppression(session, email, "hard_bounce", f"send {send.id}: {result.code} {result.enhanced_code} {result.error}"[:200])
        session.execute(update(Send).where(Send.id == send.id).values(last_progress_at=now))

    def _release(self, session: Session, send_id: int, rows: list[Claimed], state: str) -> int:
        """Give back claimed rows when a send is paused (pending) or cancelled."""
        target = "cancelled" if state == "cancelled" else "pending"
        return session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_([c.delivery_id for c in rows]),
                Delivery.claimed_by == self.identity,
                Delivery.state == "claimed",
            )
            .values(state=target, claimed_by="", updated_at=utcnow())
        ).rowcount

    def _close_batch(self, session: Session, batch: Batch) -> None:
        open_rows = exists().where(
            Delivery.send_id == batch.send_id,
            Delivery.id >= batch.first_delivery_id,
            Delivery.id <= batch.last_delivery_id,
            Delivery.state.in_(("pending", "claimed", "sending")),
        )
        session.execute(update(Batch).where(Batch.id == batch.id, ~open_rows).values(state="done"))

    def _check_error_budget(self, session: Session, send: Send, report: BatchReport) -> None:
        attempted = report.sent + report.failed + report.retry
        failures = report.failed + report.retry
        if attempted < self.settings.error_budget_minimum or failures < attempted * self.settings.error_budget_ratio:
            return
        common = max(set(report.errors), key=report.errors.count) if report.errors else ""
        reason = f"error budget exceeded: {failures} of {attempted} messages in one batch failed; most common error: {common}"
        paused = session.execute(
            update(Send).where(Send.id == send.id, Send.state == "sending").values(state="paused", paused_reason=reason[:2000])
        ).rowcount
        if paused:
            _record(session, send.id, "paused", reason)
            log.warning("send paused by its error budget", extra={"send_id": send.id, "reason": reason})

    def _template(self, session: Session, send: Send) -> "SendTemplate":
        # Compiled once per send in each worker; List-Id and Feedback-ID are per send.
        if send.id not in self._templates:
            self._templates[send.id] = SendTemplate.load(session, self.settings, send)
        return self._templates[send.id]


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """Exponential backoff with jitter, so retries from many workers spread out."""
    base = settings.retry_base_delay_seconds * (2 ** max(0, attempts - 1))
    capped = min(base, 3600.0)
    return timedelta(seconds=capped * random.uniform(0.5, 1.5))


# --- the message for one recipient ---------------------------------------------------


class SendTemplate:
    """A compiled issue ready to be personalised for the recipients of one send."""

    def __init__(self, settings: Settings, send: Send, issue: IssueRow, publication: PublicationRow, template):
        self.settings = settings
        self.send_id = send.id
        self.template = template
        self.web_url = f"{publication.web_base_url.rstrip('/')}/{issue.slug}/"
        self.domain = template.domain
        self.signer = dkim.signer_for(settings)  # None unless DKIM is configured; the key is read once

    @classmethod
    def load(cls, session: Session, settings: Settings, send: Send, *, subject_prefix: str = "") -> "SendTemplate":
        issue = session.get(IssueRow, send.issue_id)
        publication = session.get(PublicationRow, issue.publication_id)
        mailing_list = session.get(MailingList, send.list_id)
        template = message_template(issue, publication, mailing_list, send.id, subject_prefix)
        return cls(settings, send, issue, publication, template)

    def envelope(self, send: Send, row: Claimed) -> Envelope:
        recipient = Recipient(
            email=row.email,
            name=row.name,
            message_id=make_message_id(self.domain, send.id, row.delivery_id, self.settings.install_tag),
            unsubscribe_url=unsubscribe_url(self.settings, send.id, row.subscriber_id or 0),
            preferences_url=preferences_url(self.settings, row.subscriber_id or 0),
            web_url=self.web_url,
        )
        envelope = self.template.envelope(row.delivery_id, recipient)
        if self.settings.bounce_domain:  # VERP: a bounce names its ledger row
            envelope = replace(envelope, sender=verp_address(self.settings, row.delivery_id))
        if self.signer is not None:
            envelope = replace(envelope, message=self.signer.sign(envelope.message, self.domain))
        return envelope


def message_template(
    issue: IssueRow, publication: PublicationRow, mailing_list: MailingList | None, send_id: int, subject_prefix: str = ""
) -> MessageTemplate:
    list_name, list_slug = (
        (f"{publication.name}: {mailing_list.name}", f"{mailing_list.slug}.{publication.slug}")
        if mailing_list
        else (publication.name, publication.slug)
    )
    return publication_template(
        publication,
        subject=issue.subject,
        html=issue.html,
        text=issue.text,
        list_name=list_name,
        list_slug=list_slug,
        # campaign:list:publication:sender, as mailbox providers' feedback loops expect
        feedback_id=f"{send_id}:{list_slug.split('.')[0]}:{publication.slug}:newsletter",
        subject_prefix=subject_prefix,
    )


