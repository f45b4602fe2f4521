"""Proofs, approval, scheduling, and what happened: live progress, results, failures."""

from __future__ import annotations

from flask import Response, abort, jsonify, request, url_for

from newsletter.audience import segments
from newsletter.sending import scheduling
from newsletter.console import results as outcome
from newsletter.console import workflow
from newsletter.errors import InputError, NotFound
from newsletter.ops.status import send_dict
from newsletter.store.models import utcnow
from newsletter.web.console import actor, blueprint, done, message, page, problem_text
from newsletter.web.console.issues import load
from newsletter.web.pages import database, settings

POLL_SECONDS = 5


def _step(draft_id: int, run, role: str | None = None):
    """Run ``run(db, draft) -> str`` and go back to the issue's page saying what happened."""
    back = url_for("console.issue_page", draft_id=draft_id)
    try:
        with database() as db:
            draft, _publication, _roles = load(db, draft_id, role)
            text = run(db, draft)
    except PermissionError as exc:
        return message("Not for this account", f"{str(exc).capitalize()}.", back=back, status=403)
    except (InputError, NotFound) as exc:
        return message("Nothing was changed", *problem_text(exc), back=back, status=409)
    return done(text, back)


def _unsent(failed: list[str]) -> str:
    return f" The email to {'; '.join(failed)} could not be sent." if failed else ""


@blueprint.post("/issues/<int:draft_id>/proof")
def proof(draft_id: int):
    addresses = [a for a in request.form.get("to", "").replace(",", " ").split() if a]

    def run(db, draft):
        sent = workflow.send_proof(db, settings(), draft, actor(), addresses)
        return "Proof: " + "; ".join(f"{a} {o}" for a, o in sent) + "."
    return _step(draft_id, run, "editor")


@blueprint.post("/issues/<int:draft_id>/submit")
def submit(draft_id: int):
    return _step(draft_id, lambda db, draft: "Sent for approval." + _unsent(
        workflow.submit(db, settings(), draft, actor())), "editor")


@blueprint.post("/issues/<int:draft_id>/approve")
def approve(draft_id: int):
    return _step(draft_id, lambda db, draft: "Approved: it can be scheduled now." + _unsent(
        workflow.approve(db, settings(), draft, actor())), "approver")


@blueprint.post("/issues/<int:draft_id>/reject")
def reject(draft_id: int):
    return _step(draft_id, lambda db, draft: "Sent back to the editors with your comment." + _unsent(
        workflow.reject(db, settings(), draft, actor(), request.form.get("comment", ""))), "approver")


# --- scheduling -------------------------------------------------------------------------------------


@blueprint.get("/issues/<int:draft_id>/schedule")
def schedule_form(draft_id: int):
    from newsletter.sending.links import refused_links
    from newsletter.store.publications import settings_for

    chosen, at_text = request.args.getlist("lists"), request.args.get("at", "").strip()
    segment_name = request.args.get("segment", "")
    with database() as db:
        draft, publication, roles = load(db, draft_id, "editor")
        when, problem, dst = None, "", ""
        if at_text:
            try:
                when = scheduling.parse_send_time(at_text, publication.timezone, where=workflow.TIME_FIELD)
                dst = " ".join(filter(None, (workflow.dst_warning(when), scheduling.repeated_time(when))))
            except InputError as exc:
                problem = " ".join(problem_text(exc))
        audiences = workflow.audience_sizes(db, publication.id)
        now_local = scheduling.when_from_utc(utcnow(), publication.timezone)
        saved = [s for _slug, s in segments.list_segments(db, publication.slug)]
        segment, found = next((s for s in saved if s.name == segment_name), None), None
        recipients = had = 0
        if chosen or segment is not None:
            # One send: each person once, however many of the ticked lists they are on.
            list_ids, condition = _list_ids(db, publication, chosen), segment.condition if segment else ""
            everyone = segments.preview(db, publication, list_ids, condition)
            recipients, found = everyone.count, everyone if segment is not None else None
            had = scheduling.already_had(db, workflow.issue_id_of(db, draft), publication, list_ids, condition)
        return page("console/schedule.html", publication=publication, draft=draft,
                    state=workflow.display_state(db, draft), audiences=audiences, chosen=chosen, at=at_text,
                    when=when, problem=problem, dst=dst, had=had, now_local=now_local,
                    example=scheduling.example_time(publication.timezone),
                    recipients=recipients, segments=saved, segment=segment, found=found,
                    allow_box=workflow.ALLOW_BOX, resend_box=workflow.RESEND_BOX,
                    link_problems=refused_links(publication, settings_for(settings(), publication)))


def _list_ids(db, publication, slugs) -> list[int]:
    from sqlalchemy import select

    from newsletter.store.models import MailingList

    if not slugs:
        return segments.publication_list_ids(db, publication)
    return list(db.scalars(select(MailingList.id).where(MailingList.publication_id == publication.id,
                                                         MailingList.slug.in_(slugs))))


@blueprint.post("/issues/<int:draft_id>/schedule")
def schedule(draft_id: int):
    lists, at_text = request.form.getlist("lists"), request.form.get("at", "").strip()
    now, segment_name = request.form.get("when") == "now", request.form.get("segment", "")
    audience = ", ".join(lists) or "every list"
    audience += f" (segment {segment_name})" if segment_name else ""

    def run(db, draft):
        scheduled = workflow.schedule(db, settings(), draft, actor(), lists, None if now else at_text, segment_name,
                                      allow_private_links=request.form.get("allow_private_links") == "yes",
                                      resend=request.form.get("resend") == "yes")
        publication_tz = draft_tz(db, draft)
        shown = scheduling.when_from_utc(scheduled.send.scheduled_at, publication_tz).describe()
        said = f"Scheduled to {audience} for {shown}." if not now else \
            f"Sending now to {audience}: workers start within seconds."
        had = scheduled.already_had_words(f"tick \"{workflow.RESEND_BOX}\"")
        return f"{said} {had}" if had else said
    return _step(draft_id, run, "editor")


def draft_tz(db, draft) -> str:
    from newsletter.store.models import PublicationRow

    return db.get(PublicationRow, draft.publication_id).timezone


@blueprint.get("/issues/<int:draft_id>/confirm/<action>")
def confirm(draft_id: int, action: str):
    if action not in ("unschedule", "send-now", "reschedule"):
        abort(404)
    with database() as db:
        draft, publication, _roles = load(db, draft_id, "editor")
        return page("console/confirm.html", publication=publication, draft=draft, action=action,
                    recipients=workflow.waiting_recipients(db, draft), at=request.args.get("at", ""))


@blueprint.post("/issues/<int:draft_id>/unschedule")
def unschedule(draft_id: int):
    def run(db, draft):
        workflow.unschedule(db, draft, actor())
        return "Unscheduled: nothing will be sent. The issue is approved and can be scheduled again."
    return _step(draft_id, run, "editor")


@blueprint.post("/issues/<int:draft_id>/reschedule")
def reschedule(draft_id: int):
    def run(db, draft):
        when = workflow.reschedule(db, draft, actor(), request.form.get("at", ""))
        return f"Rescheduled for {when.describe()}."
    return _step(draft_id, run, "editor")


@blueprint.post("/issues/<int:draft_id>/send-now")
def send_now(draft_id: int):
    def run(db, draft):
        workflow.send_now(db, draft, actor())
        return "Sending now: workers start within seconds."
    return _step(draft_id, run, "editor")


# --- during and after ---------------------------------------------------------------------------------


@blueprint.get("/issues/<int:draft_id>/results")
def results(draft_id: int):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        rows = outcome.results(db, settings(), draft)
        state = workflow.display_state(db, draft)
        web_url = f"{publication.web_base_url.rstrip('/')}/{draft.slug}/"
        return page("console/results.html", publication=publication, draft=draft, rows=rows, state=state,
                    web_url=web_url, poll_seconds=POLL_SECONDS, live=state in ("sending", "paused", "scheduled"))


@blueprint.get("/issues/<int:draft_id>/progress.json")
def progress(draft_id: int):
    """The same numbers as `newsletter ops status --json`, for this issue's sends."""
    with database() as db:
        draft, _publication, _roles = load(db, draft_id)
        rows = outcome.results(db, settings(), draft)
        return jsonify(state=workflow.display_state(db, draft),
                       sends=[send_dict(r.status) | {"unsubscribed_after": r.unsubscribed_after} for r in rows])


@blueprint.get("/issues/<int:draft_id>/failures.csv")
def failures(draft_id: int):
    with database() as db:
        draft, publication, _roles = load(db, draft_id)
        data = outcome.failures_csv(db, draft)
    return Response(data, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{publication.slug}-{draft.slug}-failures.csv"'})
