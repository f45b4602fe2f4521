"""A draft's life: checked on every save, proofed, submitted, approved or
rejected, scheduled, and frozen once sending.

Every step is a function over a database session and is recorded in the
audit log by the caller's ``actor``; the people concerned get an email
(``accounts.notices``). Rendering, checks, proofs, storing and scheduling are the
CLI's own functions: there is one renderer and one set of checks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.accounts import admins, audit
from newsletter.sending import scheduling
from newsletter.config import Settings
from newsletter.console import drafts
from newsletter.console.findings import Finding, check_folder
from newsletter.accounts.notices import send_notice
from newsletter.errors import InputError, Problem
from newsletter.authoring.render import RenderedIssue
from newsletter.store.models import Draft, Membership, PublicationRow, Send, SendState, Subscriber, utcnow
from newsletter.audience.suppressions import suppressed_in_sql
from newsletter.wording import counted

# The one publication setting the console adds: may one person edit and approve an issue?
SELF_APPROVAL = "one_person_may_approve"
# The schedule form's boxes, as the operator reads them.
ALLOW_BOX = "Send even though its links are not public"
RESEND_BOX = "Send again to people who already had it"
STATES = ("draft", "awaiting approval", "approved", "scheduled", "sending", "paused", "sent", "cancelled")


@dataclass(frozen=True)
class Actor:
    """Who does a step, and from where: what the audit log records."""

    operator: admins.Operator
    client: str = ""

    @property
    def email(self) -> str:
        return self.operator.email

    @property
    def by(self) -> str:
        """Who steered a send, for its history."""
        return f"by {self.email} from the console"


def log(session: Session, actor: Actor, draft: Draft, action: str, detail: str = "") -> None:
    audit.record(session, actor.email, action, detail, client=actor.client,
                 publication_id=draft.publication_id, draft_id=draft.id)


# --- rendering and checking -------------------------------------------------------------


@contextmanager
def laid_out(session: Session, draft: Draft) -> Iterator[Path]:
    """The draft as an issue folder on disk, for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="newsletter-draft-") as root:
        yield drafts.materialise(session, draft, Path(root))


def check(session: Session, settings: Settings, draft: Draft) -> list[Finding]:
    """`newsletter check` on the draft as saved; the findings are kept on the draft for its pages."""
    with laid_out(session, draft) as folder:
        _rendered, findings = check_folder(folder, settings.templates_dir)
    draft.findings = [f.to_dict() for f in findings]
    draft.errors = sum(f.is_error for f in findings)
    draft.warnings = len(findings) - draft.errors
    return findings


@contextmanager
def rendering(session: Session, settings: Settings, draft: Draft) -> Iterator[tuple[RenderedIssue | None, list[Finding]]]:
    """The draft rendered by the code that sends it (its image files exist while the block runs)."""
    with laid_out(session, draft) as folder:
        yield check_folder(folder, settings.templates_dir)


def stored_findings(draft: Draft) -> list[Finding]:
    return [Finding(**f) for f in draft.findings or []]


def _require_no_errors(session: Session, settings: Settings, draft: Draft, step: str) -> None:
    findings = check(session, settings, draft)
    errors = [f for f in findings if f.is_error]
    if errors:
        raise InputError(Problem(f"issue {draft.slug}", f"the checks found {counted(len(errors), 'error')}",
                                 f"fix them before you {step}; the list is beside the preview"))


# --- approval ---------------------------------------------------------------------------


def display_state(session: Session, draft: Draft) -> str:
    """One of STATES: the approval's state, or once scheduled, what its sends are doing."""
    if draft.state != "scheduled" or draft.issue_id is None:
        return draft.state
    states = set(session.scalars(select(Send.state).where(Send.issue_id == draft.issue_id)))
    for state, shown in ((SendState.SENDING, "sending"), (SendState.PAUSED, "paused"), (SendState.SCHEDULED, "scheduled")):
        if state in states:
            return shown
    if SendState.FINISHED in states:
        return "sent"
    return "cancelled" if states else "approved"


def require_role(session: Session, actor: Actor, draft_or_publication_id, role: str) -> None:
    publication_id = getattr(draft_or_publication_id, "publication_id", draft_or_publication_id)
    if not admins.has_role(session, actor.operator, publication_id, role):
        raise PermissionError(f"this needs the {role} role in this publication")


def submit(session: Session, settings: Settings, draft: Draft, actor: Actor) -> list[str]:
    """Ask for approval; returns the notices that could not be sent."""
    require_role(session, actor, draft, "editor")
    if draft.state not in ("draft",):
        raise InputError(Problem(f"issue {draft.slug}", f"it is {display_state(session, draft)}",
                                 "only a draft can be sent for approval"))
    _require_no_errors(session, settings, draft, "send it for approval")
    draft.state, draft.submitted_by, draft.rejection = "awaiting approval", actor.email, ""
    log(session, actor, draft, "submitted for approval")
    publication = session.get(PublicationRow, draft.publication_id)
    approvers = [a for a in admins.people_with_role(session, draft.publication_id, "approver") if a != actor.email]
    return send_notice(settings, publication, approvers, f"Please approve: {draft.title or draft.slug}",
                       f"{actor.email} asks you to approve the issue \"{draft.title or draft.slug}\" of "
                       f"{publication.name}.\n\nReview it here:\n\n{issue_url(settings, draft)}\n")


def may_approve_own(publication: PublicationRow) -> bool:
    return bool((publication.settings or {}).get(SELF_APPROVAL))


def approve(session: Session, settings: Settings, draft: Draft, actor: Actor) -> list[str]:
    require_role(session, actor, draft, "approver")
    publication = session.get(PublicationRow, draft.publication_id)
    if draft.state != "awaiting approval":
        raise InputError(Problem(f"issue {draft.slug}", f"it is {display_state(session, draft)}, not awaiting approval",
                                 "an editor sends it for approval first"))
    if actor.email in (draft.editors or []) and not may_approve_own(publication):
        raise InputError(Problem(f"issue {draft.slug}", "you edited this issue, so someone else must approve it",
                                 "ask another approver; an admin can let one person do both for this publication"))
    _require_no_errors(session, settings, draft, "approve it")
    draft.state, draft.approved_by = "approved", actor.email
    log(session, actor, draft, "approved")
    return _tell_editors(session, settings, draft, actor, f"Approved: {draft.title or draft.slug}",
                         f"{actor.email} approved the issue \"{draft.title or draft.slug}\". It can be scheduled now:\n\n"
                         f"{issue_url(settings, draft)}\n")


def reject(session: Session, settings: Settings, draft: Draft, actor: Actor, comment: str) -> list[str]:
    require_role(session, actor, draft, "approver")
    comment = comment.strip()
    if not comment:
        raise InputError(Problem("comment", "a rejection needs a comment", "say what should change"))
    if draft.state != "awaiting approval":
        raise InputError(Problem(f"issue {draft.slug}", f"it is {display_state(session, draft)}, not awaiting approval",
                                 "only an issue awaiting approval can be rejected"))
    draft.state, draft.rejection = "draft", comment
    log(session, actor, draft, "rejected", comment)
    return _tell_editors(session, settings, draft, actor, f"Changes asked for: {draft.title or draft.slug}",
                         f"{actor.email} did not approve the issue \"{draft.title or draft.slug}\" and wrote:\n\n"
                         f"{comment}\n\nEdit it here, then send it for approval again:\n\n{issue_url(settings, draft)}\n")


def _tell_editors(session, settings, draft, actor, subject, text) -> list[str]:
    publication = session.get(PublicationRow, draft.publication_id)
    people = [a for a in {*(draft.editors or []), draft.submitted_by} if a and a != actor.email]
    return send_notice(settings, publication, people, subject, text)


def issue_url(settings: Settings, draft: Draft) -> str:
    return f"{settings.base_url}/console/issues/{draft.id}"


# --- proofs -----------------------------------------------------------------------------


def send_proof(session: Session, settings: Settings, draft: Draft, actor: Actor, addresses: Sequence[str],
               transport=None) -> list[tuple[str, str]]:
    """A copy marked as a proof to each address, outside the ledger (``proofs.send_proof``); (address, outcome)."""
    from newsletter.authoring.sending_block import SendingBlock, lane_settings
    from newsletter.sending.proofs import send_proof as proof
    from newsletter.transports import make_transport

    require_role(session, actor, draft, "editor")
    addresses = [a.strip() for a in addresses if a.strip()] or [actor.email]
    with rendering(session, settings, draft) as (rendered, findings):
        errors = [f for f in findings if f.is_error]
        if rendered is None or errors:
            raise InputError(Problem(f"issue {draft.slug}", f"the checks found {counted(len(errors), 'error')}",
                                     "fix them before sending a proof"))
        own = transport is None
        publication = rendered.issue.publication
        # Through the publication's own transport and account, as its sends go.
        transport = transport or make_transport(
            lane_settings(settings, publication.sending or SendingBlock(), publication.slug))
        try:
            results = proof(settings, rendered, addresses, transport, where="field To")
        finally:
            if own:
                transport.close()
    outcome = [(a, "sent" if r.status == "sent" else f"not sent: {r.error or r.status}") for a, r in zip(addresses, results)]
    log(session, actor, draft, "sent a proof", ", ".join(f"{a} ({o})" for a, o in outcome))
    return outcome


# --- scheduling -------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    list_slug: str
    list_name: str
    recipients: int


def audience_sizes(session: Session, publication_id: int) -> list[Audience]:
    """Each list of the publication and how many would receive a send to it now."""
    from newsletter.store.models import MailingList

    counted = (select(MailingList.slug, MailingList.name, func.count(Subscriber.id))
               .outerjoin(Membership, (Membership.list_id == MailingList.id) & (Membership.status == "confirmed"))
               .outerjoin(Subscriber, (Subscriber.id == Membership.subscriber_id) & (Subscriber.status == "active")
                          & ~suppressed_in_sql(Subscriber.email))
               .where(MailingList.publication_id == publication_id)
               .group_by(MailingList.id, MailingList.slug, MailingList.name).order_by(MailingList.slug))
    return [Audience(slug, name, count) for slug, name, count in session.execute(counted).all()]


TIME_FIELD = "date and time"  # what the console's problems about a send time are at


def dst_warning(when: scheduling.When, now=None) -> str:
    """A sentence when the clocks change between now and the send, else ""."""
    now = now or utcnow()
    tz = when.local.tzinfo
    before, after = now.astimezone(tz).utcoffset(), when.local.utcoffset()
    if before == after:
        return ""
    direction = "forward" if after > before else "back"
    return (f"The clocks go {direction} in {when.local.tzinfo} before this send: "
            f"{when.local:%H:%M} there is {when.utc:%H:%M} UTC, not {(when.utc + after - before):%H:%M} UTC as today.")


def schedule(session: Session, settings: Settings, draft: Draft, actor: Actor, list_slugs: Sequence[str],
             at_text: str | None, segment_name: str = "", allow_private_links: bool = False,
             resend: bool = False) -> scheduling.Scheduled:
    """Store the approved draft as an issue and schedule it (``at_text`` None: now).

    One send to all the ticked lists, as ``newsletter schedule`` makes
    (``scheduling.schedule_issue``, the one function both call): a person on
    several of them gets the issue once, and people an earlier send of the issue
    reached are left out unless ``resend`` (the form's "send again" box).
    With a segment, the people it matches on the lists (on any list of the
    publication when none is ticked). Links that are not https and public are
    refused for a real send unless ``allow_private_links`` (the form's "send
    anyway" box) says they are meant.
    """
    from newsletter.authoring.publishing import checked_render
    from newsletter.store.issues import store_issue
    from newsletter.audience.segments import get_segment
    from newsletter.audience.subscribers import get_list
    from newsletter.authoring.webcopy import write_issue_pages

    require_role(session, actor, draft, "editor")
    if draft.state != "approved":
        raise InputError(Problem(f"issue {draft.slug}", f"it is {display_state(session, draft)}",
                                 "an issue is scheduled once it is approved"))
    if not list_slugs and not segment_name:
        raise InputError(Problem("lists", "no list is chosen", "tick at least one list, or choose a segment"))
    publication = session.get(PublicationRow, draft.publication_id)
    segment = get_segment(session, publication.slug, segment_name) if segment_name else None
    when = scheduling.parse_send_time(at_text, publication.timezone, where=TIME_FIELD) if at_text else None
    lists = [get_list(session, publication.slug, slug) for slug in dict.fromkeys(list_slugs)]
    with laid_out(session, draft) as folder:
        rendered, _warnings = checked_render(folder, settings.templates_dir)
        row = store_issue(session, rendered)
        scheduled = scheduling.schedule_issue(
            session, settings, row, lists, when.utc if when else None, segment=segment,
            allow_private_links=allow_private_links, resend=resend, how_to_allow=f"tick \"{ALLOW_BOX}\"")
        # The pictures the email links to, where the web app serves the web copy from.
        write_issue_pages(Path(settings.web_copy_dir) / publication.slug / rendered.issue.slug, rendered)
    draft.issue_id, draft.state = row.id, "scheduled"
    shown = scheduling.when_from_utc(scheduled.send.scheduled_at, publication.timezone).describe()
    audience = ", ".join(list_slugs) or "every list"
    had = f"; {scheduled.already_had_words(f'tick {RESEND_BOX!r}')}" if scheduled.already_had else ""
    log(session, actor, draft, "scheduled",
        f"to {audience}{f' (segment {segment.name})' if segment else ''} at {shown}{' (a resend)' if resend else ''}{had}")
    return scheduled


def issue_id_of(session: Session, draft: Draft) -> int | None:
    """The stored issue the draft is, if it was ever stored (scheduled here, or from the command line)."""
    from newsletter.store.models import IssueRow

    if draft.issue_id is not None:
        return draft.issue_id
    return session.scalar(select(IssueRow.id).where(IssueRow.publication_id == draft.publication_id,
                                                    IssueRow.slug == draft.slug))


def scheduled_sends(session: Session, draft: Draft) -> list[Send]:
    if draft.issue_id is None:
        return []
    return list(session.scalars(select(Send).where(Send.issue_id == draft.issue_id).order_by(Send.id)))


def waiting_sends(session: Session, draft: Draft, fix: str) -> list[Send]:
    """The issue's sends still waiting for their time, or an error that says what to do instead."""
    waiting = [s for s in scheduled_sends(session, draft) if s.state == SendState.SCHEDULED]
    if not waiting:
        raise InputError(Problem(f"issue {draft.slug}", "it has no send waiting to start", fix))
    return waiting


def unschedule(session: Session, draft: Draft, actor: Actor) -> None:
    require_role(session, actor, draft, "editor")
    waiting = waiting_sends(session, draft, "nothing to unschedule")
    for send in waiting:
        scheduling.unschedule(session, send.id, by=actor.by)
    draft.state = "approved"
    log(session, actor, draft, "unscheduled")


def reschedule(session: Session, draft: Draft, actor: Actor, at_text: str) -> scheduling.When:
    require_role(session, actor, draft, "editor")
    publication = session.get(PublicationRow, draft.publication_id)
    when = scheduling.parse_send_time(at_text, publication.timezone, where=TIME_FIELD)
    waiting = waiting_sends(session, draft, "schedule it instead")
    for send in waiting:
        scheduling.reschedule(session, send.id, when.utc, by=actor.by)
    log(session, actor, draft, "rescheduled", f"to {when.describe()}")
    return when


def send_now(session: Session, draft: Draft, actor: Actor) -> int:
    require_role(session, actor, draft, "editor")
    waiting = waiting_sends(session, draft, "schedule it first")
    for send in waiting:
        scheduling.send_now(session, send.id, by=actor.by)
    log(session, actor, draft, "send now")
    return len(waiting)


def waiting_recipients(session: Session, draft: Draft) -> int:
    """How many people the draft's waiting sends would go to if they started now."""
    total = 0
    for send in scheduled_sends(session, draft):
        if send.state == SendState.SCHEDULED:
            audience, had = scheduling.audience_today(session, send)
            total += audience if send.resend else audience - had
    return total
