"""Putting a send on the calendar: local times, DST, and the send's life cycle.

A send is a row; a beat tick polls for due ones (see ``sending.claim_due_sends``).
Nothing here talks to Celery or to a transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import InputError, Problem
from newsletter.audience.segments import audience_filter
from newsletter.sending.links import ALLOW_FLAG, check_links_allowed
from newsletter.sending.send_record import get_send, header_list_of, list_ids_of, publication_of, record_send_event
from newsletter.sending.send_template import message_template
from newsletter.store import clock
from newsletter.store.publications import settings_for
from newsletter.wording import counted
from newsletter.store.models import (
    Batch,
    BatchState,
    Delivery,
    DeliveryState,
    IssueRow,
    MailingList,
    POLICY_REFUSAL,
    PublicationRow,
    Segment,
    Send,
    SendList,
    SendState,
    Subscriber,
    utcnow,
)
from newsletter.audience.suppressions import suppressed_in_sql

TIME_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class When:
    """A moment as the user meant it, with both clocks people ask for."""

    utc: datetime
    local: datetime

    def describe(self) -> str:
        # Seconds only when there are some: "--at 09:30:15" is shown as it was stored.
        clock = "%H:%M:%S" if self.utc.second else "%H:%M"
        return (
            f"{self.local.strftime('%A %d %B %Y ' + clock)} {self.local.tzname()} "
            f"({self.utc.strftime('%Y-%m-%d ' + clock)} UTC)"
        )


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            Problem("publication timezone", f"unknown time zone {name!r}", "use an IANA name such as Europe/London")
        ) from None


def parse_local_time(text: str, tz_name: str) -> When:
    """Read "2026-12-01 09:00" as a wall-clock time in tz_name, DST-correct.

    A time that does not exist (clocks go forward) is refused; a time that
    happens twice (clocks go back) is the first of the two, and is said so.
    """
    tz = zone(tz_name)
    naive = None
    for fmt in TIME_FORMATS:
        try:
            naive = datetime.strptime(text.strip(), fmt)
            break
        except ValueError:
            continue
    if naive is None:
        raise InputError(
            Problem("--at", f"cannot read {text!r} as a date and time", 'write it as "YYYY-MM-DD HH:MM", e.g. "2026-12-01 09:00"')
        )
    first = naive.replace(tzinfo=tz, fold=0)
    # A wall time in the spring-forward gap does not survive a round trip.
    if first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) != naive:
        raise InputError(
            Problem(
                "--at",
                f"{naive:%Y-%m-%d %H:%M} does not exist in {tz_name}: the clocks go forward then",
                "choose a time an hour later or earlier",
            )
        )
    # In the autumn overlap fold=0 is the earlier moment; describe() shows its zone.
    return When(utc=first.astimezone(timezone.utc), local=first)


def when_from_utc(moment: datetime, tz_name: str) -> When:
    return When(utc=moment.astimezone(timezone.utc), local=moment.astimezone(zone(tz_name)))


@dataclass(frozen=True)
class Scheduled:
    """A send just put on the calendar, and who it would reach if it started now."""

    send: Send
    audience: int  # people on its lists (in its segment) today, each once
    already_had: int  # of them, people an earlier send of the issue reached: left out unless a resend

    def already_had_words(self, how_to_resend: str) -> str:
        """What the operator is told of people who already had the issue ("" when nobody did)."""
        had, audience = self.already_had, self.audience
        if not had:
            return ""
        if self.send.resend:
            return f"{had:,} of its {counted(audience, 'recipient')} already had this issue from an earlier send and get it again."
        return (f"{had:,} of its {counted(audience, 'recipient')} already had this issue from an earlier send and are left out "
                f"(one copy per person; {how_to_resend} to send it to them again).")


def schedule_issue(
    session: Session,
    settings: Settings,
    issue: IssueRow,
    lists: Sequence[MailingList],
    at: datetime | None,
    *,
    segment: Segment | None = None,
    batch_size: int | None = None,
    allow_private_links: bool = False,
    resend: bool = False,
    how_to_allow: str = f"schedule with {ALLOW_FLAG}",
) -> Scheduled:
    """The one way an issue is put on the calendar, from the command line and the console.

    One send, whatever the number of lists: each person once. A real send whose
    links subscribers could not follow is refused unless ``allow_private_links``
    (``how_to_allow`` says how the operator says so where they are). People an
    earlier send of the issue reached are left out when it starts, unless
    ``resend`` asks for them to get it again; ``already_had`` says how many of
    today's audience that is.
    """
    publication = session.get(PublicationRow, issue.publication_id)
    check_links_allowed(publication, settings_for(settings, publication), allow_private_links, how_to_allow)
    send = schedule_send(session, issue, lists, at, segment=segment, batch_size=batch_size or settings.batch_size,
                         allow_private_links=allow_private_links, resend=resend)
    audience, had = audience_today(session, send)
    if had:
        record_send_event(session, send.id, "resend" if resend else "already had it",
                          f"{had:,} of {counted(audience, 'recipient')} already had this issue from an earlier send: "
                          + ("they get it again" if resend else "they are left out"))
    return Scheduled(send, audience, had)


def audience_today(session: Session, send: Send) -> tuple[int, int]:
    """(people the send would reach if it started now, how many of them already had its issue)."""
    publication, list_ids = publication_of(session, send), list_ids_of(session, send)
    where = audience_filter(session, publication, list_ids, send.segment_condition, strict=False)
    audience = session.scalar(select(func.count()).select_from(Subscriber).where(where)) or 0
    if not reached_before(session, send):
        return audience, 0
    return audience, already_had(session, send.issue_id, publication, list_ids, send.segment_condition, other_than=send.id)


def already_had(session: Session, issue_id: int | None, publication: PublicationRow, list_ids: Sequence[int],
                condition: str = "", *, other_than: int | None = None) -> int:
    """How many of the people on ``list_ids`` (in the segment ``condition``) a send of the
    issue reached (or is reaching): those a new send leaves out unless it is a resend."""
    if issue_id is None:
        return 0
    where = audience_filter(session, publication, list(list_ids), condition, strict=False)
    return session.scalar(select(func.count()).select_from(Subscriber).where(where, had_issue(issue_id, other_than))) or 0


def reached_before(session: Session, send: Send) -> bool:
    """Whether another send of the issue reached (or is reaching) anyone: a quick look
    through the one-copy index, so that the first send of an issue, by far the most
    common, freezes as it always did. Ask it before the send's own rows are frozen."""
    return session.scalar(select(Delivery.id).where(Delivery.issue_id == send.issue_id, Delivery.send_id != send.id,
                                                    *holds_issue()).limit(1)) is not None


def had_issue(issue_id: int, other_than: int | None = None):
    """A WHERE on Subscriber: a send ``other_than`` the one asking gave (or is giving)
    this person the issue."""
    return exists().where(Delivery.issue_id == issue_id, Delivery.subscriber_id == Subscriber.id, *holds_issue(),
                          *([Delivery.send_id != other_than] if other_than is not None else []))


def holds_issue() -> tuple:
    """A ledger row that gives its person the issue: ``models.HOLDS_ISSUE``, the one-copy
    index's condition, spelled alike so that the database can answer from that index."""
    return ~Delivery.resend, Delivery.state.not_in((DeliveryState.CANCELLED, DeliveryState.SKIPPED))


def schedule_send(
    session: Session,
    issue: IssueRow,
    lists: MailingList | Sequence[MailingList],
    at: datetime | None,
    *,
    segment: Segment | None = None,
    now: datetime | None = None,
    batch_size: int = 200,
    allow_private_links: bool = False,
    resend: bool = False,
) -> Send:
    """Put an issue on the calendar for one list, several, or a segment. ``at=None`` means now.

    A segment alone goes to the people it matches on any list of the issue's
    publication; with lists, to those it matches on those lists. A time in
    the past is refused: the caller asks for "now" explicitly.
    ``allow_private_links`` lets a real send go out with links that are not
    https and public (sending/links.py); the demo's are, on purpose.
    ``resend``: people who already had the issue from an earlier send get it
    again (without it they are left out when the audience is frozen).
    Front doors call ``schedule_issue``, which checks the links first.
    "Now" is the database's clock, the one the beat reads.
    """
    now = clock.read(session, now)
    targets = [lists] if isinstance(lists, MailingList) else list(dict.fromkeys(lists or ()))
    _check_audience(session, issue, targets, segment)
    if not targets:
        targets = session.scalars(
            select(MailingList).where(MailingList.publication_id == issue.publication_id).order_by(MailingList.id)
        ).all()
    if at is not None and at < now - timedelta(seconds=1):
        raise InputError(
            Problem("--at", f"{at:%Y-%m-%d %H:%M} UTC is in the past", "give a later time, or use --now to send at once")
        )
    send = Send(
        issue_id=issue.id,
        list_id=targets[0].id,
        state=SendState.SCHEDULED,
        scheduled_at=at or now,
        batch_size=batch_size,
        segment_name=segment.name if segment else "",
        segment_condition=segment.condition if segment else "",
        allow_private_links=allow_private_links,
        resend=resend,
    )
    session.add(send)
    session.flush()
    session.add_all(SendList(send_id=send.id, list_id=target.id) for target in targets)
    session.flush()
    _check_headers(session, send, issue, header_list_of(session, send))
    record_send_event(session, send.id, "scheduled", f"for {send.scheduled_at:%Y-%m-%d %H:%M:%S} UTC")
    return send


def _check_headers(session: Session, send: Send, issue: IssueRow, mailing_list: MailingList | None) -> None:
    """Build the send's message template now, as the workers will: whatever they would
    refuse (a list name that could add a header, say) is refused here, before anything is stored."""
    try:
        message_template(issue, publication_of(session, send), mailing_list, send.id)
    except InputError as exc:
        where = f"list {mailing_list.slug}" if mailing_list else f"publication {publication_of(session, send).slug}"
        raise InputError([Problem(f"{where}: {p.where}", p.message, p.fix) for p in exc.problems]) from None


def _check_audience(session: Session, issue: IssueRow, targets: list[MailingList], segment: Segment | None) -> None:
    if not targets and segment is None:
        raise InputError(Problem("--list / --segment", "a send needs an audience", "give one or more --list, or --segment"))
    for mailing_list in targets:
        if issue.publication_id != mailing_list.publication_id:
            raise InputError(
                Problem("--list", f"list {mailing_list.slug!r} belongs to another publication than issue {issue.slug!r}",
                        "choose a list of the issue's publication")
            )
    if segment is not None and segment.publication_id != issue.publication_id:
        raise InputError(Problem("--segment", f"segment {segment.name!r} belongs to another publication than issue {issue.slug!r}",
                                 "choose a segment of the issue's publication"))
    if not targets and session.scalar(select(MailingList.id).where(MailingList.publication_id == issue.publication_id)) is None:
        raise InputError(Problem("--segment", "the publication has no lists, so nobody has agreed to receive it",
                                 "create a list and add subscribers first"))


# Each way of steering a send takes ``by``: who did it and from where ("by
# ops@example.org from the dashboard"), written in the send's history.


def _with_by(detail: str, by: str) -> str:
    return ", ".join(part for part in (detail, by) if part)


def reschedule(session: Session, send_id: int, at: datetime, *, now: datetime | None = None, by: str = "") -> Send:
    now = clock.read(session, now)
    if at < now - timedelta(seconds=1):
        raise InputError(Problem("--at", f"{at:%Y-%m-%d %H:%M} UTC is in the past", "give a later time"))
    return _move_scheduled(session, send_id, at, "rescheduled", by)


def send_now(session: Session, send_id: int, *, now: datetime | None = None, by: str = "") -> Send:
    """Make a scheduled send due now, by the database's clock (the one the beat reads)."""
    return _move_scheduled(session, send_id, clock.read(session, now), "send now", by)


def _move_scheduled(session: Session, send_id: int, at: datetime, kind: str, by: str) -> Send:
    result = session.execute(
        update(Send).where(Send.id == send_id, Send.state == SendState.SCHEDULED).values(scheduled_at=at, updated_at=utcnow())
    )
    send = get_send(session, send_id)
    if result.rowcount != 1:
        raise InputError(Problem(f"send {send_id}", f"it is {send.state}, not scheduled", "only a scheduled send can be moved"))
    record_send_event(session, send_id, kind, _with_by(f"for {at:%Y-%m-%d %H:%M:%S} UTC", by))
    return send


def unschedule(session: Session, send_id: int, *, by: str = "") -> Send:
    """Take a send off the calendar before it starts (it is kept, cancelled)."""
    result = session.execute(
        update(Send).where(Send.id == send_id, Send.state == SendState.SCHEDULED).values(state=SendState.CANCELLED, updated_at=utcnow())
    )
    send = get_send(session, send_id)
    if result.rowcount != 1:
        raise InputError(
            Problem(f"send {send_id}", f"it is {send.state}, not scheduled", "a started send is paused or cancelled instead")
        )
    record_send_event(session, send_id, "unscheduled", by)
    return send


def pause(session: Session, send_id: int, reason: str = "", *, by: str = "") -> Send:
    """Stop handing out messages; workers notice before their next chunk."""
    reason = _with_by(reason, by) or "paused by an operator"
    return _transition(session, send_id, (SendState.SENDING,), SendState.PAUSED, "paused", reason)


def resume(session: Session, send_id: int, *, by: str = "") -> Send:
    """Carry on with a paused send (by an operator or by its error budget).

    Its unfinished batches are marked for the next beat tick to hand out, so
    workers pick the send up again within a beat interval. Rows a server
    refused by policy (5.7.x: the sender or the content, not the address) are
    tried again: the pause was the time to fix the cause.
    """
    send = _transition(session, send_id, (SendState.PAUSED,), SendState.SENDING, "resumed", by)
    now = clock.read(session)  # the rows are due by the clock the beat reads, whatever this host's says
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send_id, Delivery.state == DeliveryState.FAILED, Delivery.last_error.startswith(POLICY_REFUSAL),
               ~suppressed_in_sql(Delivery.email))
        .values(state=DeliveryState.RETRY, next_attempt_at=now, claimed_by="", updated_at=now)
    )
    session.execute(update(Batch).where(Batch.send_id == send_id, Batch.state != BatchState.DONE).values(state=BatchState.WAITING))
    return send


def cancel(session: Session, send_id: int, *, by: str = "") -> Send:
    """End a send for good; recipients not yet sent to are marked cancelled."""
    send = _transition(session, send_id, (SendState.SCHEDULED, SendState.SENDING, SendState.PAUSED), SendState.CANCELLED,
                       "cancelled", by)
    session.execute(
        update(Delivery)
        .where(Delivery.send_id == send_id, Delivery.state.in_((DeliveryState.PENDING, DeliveryState.RETRY)))
        .values(state=DeliveryState.CANCELLED, updated_at=utcnow())
    )
    return send


def _transition(session, send_id, from_states, to_state, kind, reason) -> Send:
    now = clock.read(session)
    values = {"state": to_state, "updated_at": now}
    if to_state == SendState.PAUSED:
        values["paused_reason"] = reason
    elif to_state == SendState.SENDING:
        values["paused_reason"] = ""
        values["last_progress_at"] = now  # a resumed send is not "stalled" (by the beat's clock)
        values["budget_attempts"] = values["budget_failures"] = 0  # its error budget starts afresh
    if to_state == SendState.CANCELLED:
        values["finished_at"] = now
    result = session.execute(update(Send).where(Send.id == send_id, Send.state.in_(from_states)).values(**values))
    send = get_send(session, send_id)
    if result.rowcount != 1:
        raise InputError(
            Problem(f"send {send_id}", f"it is {send.state}", f"only a send that is {' or '.join(from_states)} can be {kind}")
        )
    record_send_event(session, send_id, kind, reason)
    session.refresh(send)
    return send


def retry_failed(session: Session, send_id: int, *, now: datetime | None = None, by: str = "") -> int:
    """Send again to the recipients whose delivery failed, and to no one else.

    Suppressed addresses (hard bounces, complaints, ...) and hard bounces
    (5.1.x) stay failed. The rows wait as "retry", due now; the beat tick hands
    their batches out again (``lifecycle.batches_to_requeue``). A finished send
    is sending again until they are done. Returns how many rows will be retried.
    """
    now = clock.read(session, now)  # due by the beat's clock
    send = get_send(session, send_id)
    if send.state not in (SendState.SENDING, SendState.PAUSED, SendState.FINISHED):
        raise InputError(
            Problem(f"send {send_id}", f"it is {send.state}", "only a send that is sending, paused or finished can retry its failures")
        )
    retried = session.execute(
        update(Delivery)
        .where(
            Delivery.send_id == send_id,
            Delivery.state == DeliveryState.FAILED,
            ~suppressed_in_sql(Delivery.email),
            ~or_(Delivery.last_error.like("5.1.%"), Delivery.last_error.like("% 5.1.%")),
        )
        .values(state=DeliveryState.RETRY, next_attempt_at=now, claimed_by="", updated_at=now)
    ).rowcount
    session.execute(update(Send).where(Send.id == send_id).values(budget_attempts=0, budget_failures=0))
    if retried and send.state == SendState.FINISHED:
        session.execute(
            update(Send).where(Send.id == send_id, Send.state == SendState.FINISHED)
            .values(state=SendState.SENDING, finished_at=None, last_progress_at=now, updated_at=now)
        )
    record_send_event(session, send_id, "retry failed", _with_by(f"{counted(retried, 'failed recipient')} to be sent again", by))
    session.refresh(send)
    return retried


# --- a send time as a person types it (the CLI's --at and the console's form) ------------------


def parse_send_time(text: str, tz_name: str, *, now: datetime | None = None, where: str = "--at") -> When:
    """``parse_local_time`` for a send: a time already past is refused, saying the time it is now.

    ``where`` names the field in the problems ("--at" for the CLI, the form's label in the console).
    """
    now = now or utcnow()
    try:
        when = parse_local_time(text, tz_name)
    except InputError as exc:
        example = f'write it as "YYYY-MM-DD HH:MM", e.g. "{example_time(tz_name, now)}"'
        raise InputError([Problem(where, p.message, example if p.message.startswith("cannot read") else p.fix,
                                  p.severity) for p in exc.problems]) from None
    if when.utc < now - timedelta(seconds=1):  # the rule schedule_send applies
        current = when_from_utc(now, tz_name).local
        at_once = "use --now to send at once" if where.startswith("--") else "press Send now to send at once"
        raise InputError(Problem(
            where, f"{when.local:%Y-%m-%d %H:%M} is in the past: it is now "
                   f"{current:%A %d %B %Y %H:%M} {current.tzname()} in {tz_name}",
            f"choose a later time, such as {example_time(tz_name, now)}, or {at_once}"))
    return when


def repeated_time(when: When) -> str:
    """A sentence when the local time happens twice (the clocks go back then), else ""."""
    local = when.local.replace(tzinfo=None)
    tz = when.local.tzinfo
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return ""
    return (f"{local:%H:%M} on {local:%d %B %Y} happens twice in {tz}: the clocks go back that night. "
            f"This is the first, {first.tzname()} ({first.astimezone(timezone.utc):%H:%M} UTC); the second "
            f"would be {second.astimezone(timezone.utc):%H:%M} UTC. Choose another time if you meant the second.")


def example_time(tz_name: str, now: datetime | None = None) -> str:
    """A time to show as an example of the format: 09:00 on the first of next month there."""
    local = (now or utcnow()).astimezone(zone(tz_name))
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return f"{year:04d}-{month:02d}-01 09:00"
