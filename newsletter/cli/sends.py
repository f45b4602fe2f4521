"""Commands that put issues on the calendar and steer sends."""

from __future__ import annotations

from pathlib import Path

import click
from rich import box
from rich.table import Table

from newsletter.sending import lifecycle, scheduling, send_record
from newsletter.cli import LazyConsole, by_operator, main, print_problems
from newsletter.config import get_settings
from newsletter.errors import EXIT_CODES_HELP, InputError, Problem
from newsletter.store.db import session_scope
from newsletter.store.migrate import upgrade

console = LazyConsole()


def _session():
    settings = get_settings()
    upgrade(settings.effective_database_url)
    return settings, session_scope(settings)


def prepared_issue(folder: Path, settings):
    """Load, render and check an issue folder; refuse it if a check fails."""
    from newsletter.authoring.publishing import checked_render

    rendered, warnings = checked_render(folder, settings.templates_dir)
    print_problems(warnings)
    return rendered


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--list", "list_slugs", multiple=True, metavar="SLUG", help="A list to send to (repeatable).")
@click.option("--segment", "segment_name", metavar="NAME", help="Only the people of this segment (on --list, or on any list).")
@click.option("--at", "at_text", help='Local time in the publication\'s time zone, "YYYY-MM-DD HH:MM[:SS]".')
@click.option("--now", "now_", is_flag=True, help="Send as soon as a worker picks it up.")
@click.option("--batch-size", type=click.IntRange(1, 10000), help="Recipients per batch task.")
@click.option("--preview", is_flag=True, help="Show who it would go to today, and schedule nothing.")
@click.option("--allow-private-links", is_flag=True,
              help="Let a real send go out with links that are not https, or point at loopback or a private address.")
@click.option("--resend", is_flag=True,
              help="Send it again to people who already had this issue from an earlier send (left out otherwise).")
def schedule(folder: Path, list_slugs: tuple[str, ...], segment_name: str | None, at_text: str | None, now_: bool,
             batch_size: int | None, preview: bool, allow_private_links: bool, resend: bool):
    """Check an issue, store it, and schedule it for one or more lists or a segment.

    The audience count and ten of its people are shown first. Who receives it
    is fixed when the send starts: people who join later are not added, and
    people an earlier send of the issue reached are left out unless --resend.
    """
    from newsletter.cli.segments import show_audience
    from newsletter.sending.links import sending_warnings
    from newsletter.store.publications import get_publication
    from newsletter.audience.segments import get_segment, publication_list_ids
    from newsletter.audience.segments import preview as audience_preview
    from newsletter.store.issues import store_issue
    from newsletter.audience.subscribers import get_list

    if not list_slugs and not segment_name:
        raise InputError(Problem("--list / --segment", "say who to send to", "give --list SLUG (repeatable) or --segment NAME"))
    if bool(at_text) == now_ and not preview:
        raise InputError(Problem("--at / --now", "say when to send", 'give --at "YYYY-MM-DD HH:MM" or --now'))
    settings, scope = _session()
    rendered = prepared_issue(folder, settings)
    publication = rendered.issue.publication
    when = scheduling.parse_send_time(at_text, publication.timezone) if at_text else None
    with scope as session:
        lists = [get_list(session, publication.slug, slug) for slug in dict.fromkeys(list_slugs)]
        segment = get_segment(session, publication.slug, segment_name) if segment_name else None
        pub_row = get_publication(session, publication.slug)
        list_ids = [row.id for row in lists] or publication_list_ids(session, pub_row)
        show_audience(audience_preview(session, pub_row, list_ids, segment.condition if segment else ""))
        if preview:
            print_problems(sending_warnings(publication, settings))
            console.print("Nothing was scheduled (--preview).")
            return
        issue_row = store_issue(session, rendered)
        # Links subscribers could not follow are refused here, and nothing is stored.
        scheduled = scheduling.schedule_issue(
            session, settings, issue_row, lists, when.utc if when else None, segment=segment,
            batch_size=batch_size, allow_private_links=allow_private_links, resend=resend,
        )
        shown = scheduling.when_from_utc(scheduled.send.scheduled_at, publication.timezone)
        send_id, audience = scheduled.send.id, audience_words(lists, segment)
    print_problems(sending_warnings(publication, settings))
    # Only now, after the commit: a send that is announced exists.
    console.print(
        f"Scheduled send [bold]{send_id}[/]: {publication.name} {rendered.issue.slug} "
        f"to {audience} at {shown.describe()}."
    )
    if scheduled.already_had:
        console.print(scheduled.already_had_words("--resend"), highlight=False)
    console.print("Workers and beat must be running (see the Procfile) for it to go out.")


def audience_words(lists, segment) -> str:
    named = ", ".join(f"[bold]{row.slug}[/]" for row in lists)
    words = ("list " if len(lists) == 1 else "lists ") + named if lists else ""
    if segment is not None:
        return f"segment [bold]{segment.name}[/]" + (f" on {words}" if words else "")
    return words


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "addresses", multiple=True, required=True, help="An address to send the proof to (repeatable).")
def proof(folder: Path, addresses: tuple[str, ...]):
    """Send a copy marked as a proof to given addresses; no subscriber is touched."""
    from newsletter.sending.proofs import send_proof
    from newsletter.transports import make_transport

    from newsletter.authoring.sending_block import SendingBlock, lane_settings

    settings = get_settings()
    rendered = prepared_issue(folder, settings)
    publication = rendered.issue.publication
    # Through the publication's own transport and account, as its sends go.
    own = lane_settings(settings, publication.sending or SendingBlock(), publication.slug)
    with make_transport(own) as transport:
        results = send_proof(settings, rendered, addresses, transport)
    for address, result in zip(addresses, results):
        colour = "green" if result.status == "sent" else "red"
        console.print(f"[{colour}]{address}: {result.status}[/] {result.error}", highlight=False)
    if any(r.status != "sent" for r in results):
        raise SystemExit(1)


@main.group()
def sends():
    """See and steer sends."""


@sends.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include finished and cancelled sends.")
def list_sends(show_all: bool):
    """Sends, newest first, with their progress."""
    from newsletter.feedback.reports import send_overview

    settings, scope = _session()
    with scope as session:
        rows = send_overview(session, include_finished=show_all)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("id", "issue → list", "state", "when (local)", "sent", "failed", "dup?"):
        table.add_column(name, no_wrap=True)
    for r in rows:
        counts = r.progress.counts
        table.add_row(
            str(r.send_id), f"{r.issue} → {r.list}", r.state, f"{r.when.local:%Y-%m-%d %H:%M %Z}",
            f"{counts.get('sent', 0):,}", f"{counts.get('failed', 0):,}", f"{r.progress.possible_duplicates:,}",
        )
    console.print(table)


@sends.command("show")
@click.argument("send_id", type=int)
def show_send(send_id: int):
    """One send: when, to whom, its progress and its history."""
    from sqlalchemy import select

    from newsletter.store.models import MailingList, SendEvent

    settings, scope = _session()
    with scope as session:
        send = send_record.get_send(session, send_id)
        tz = send_record.publication_of(session, send).timezone
        p = lifecycle.progress(session, send_id)
        history = session.scalars(select(SendEvent).where(SendEvent.send_id == send_id).order_by(SendEvent.id)).all()
        when = scheduling.when_from_utc(send.scheduled_at, tz)
        console.print(f"Send {send_id}: [bold]{p.state}[/], scheduled for {when.describe()}")
        slugs = session.scalars(
            select(MailingList.slug).where(MailingList.id.in_(send_record.list_ids_of(session, send))).order_by(MailingList.slug)
        ).all()
        segment = f"; segment {send.segment_name}: {send.segment_condition}" if send.segment_name else ""
        console.print(f"To: {'list' if len(slugs) == 1 else 'lists'} {', '.join(slugs)}{segment}", highlight=False)
        if send.started_at is None:
            console.print("The audience is frozen when the send starts.")
        else:
            console.print(f"{p.audience} recipients: {lifecycle.summary_line(p)}")
        for transport, account, rows in lifecycle.sent_through(session, send_id):
            console.print(f"Through {transport}, account {account}: {rows} recipients", highlight=False)
        if send.allow_private_links:
            console.print("Links that are not https and public were allowed (--allow-private-links).")
        if p.paused_reason:
            console.print(f"[yellow]Paused: {p.paused_reason}[/]", highlight=False)
        for event in history:
            shown = scheduling.when_from_utc(event.created_at, tz).local
            console.print(f"  {shown:%Y-%m-%d %H:%M:%S %Z}  {event.kind}  {event.detail}", highlight=False)


def _steer(action, send_id: int, *args, done: str = ""):
    settings, scope = _session()
    with scope as session:
        state = action(session, send_id, *args, by=by_operator()).state
    # Only now, after the commit: an operator who reads "paused" can rely on it.
    console.print(done.format(send_id=send_id, beat=f"{settings.beat_interval_seconds:g}")
                  or f"Send {send_id} is now [bold]{state}[/].")


@sends.command("pause")
@click.argument("send_id", type=int)
@click.option("--reason", default="", help="Why, for the send's history (who and where are added).")
def pause_send(send_id: int, reason: str):
    """Stop handing out messages; workers stop within one chunk."""
    _steer(scheduling.pause, send_id, reason)


@sends.command("resume")
@click.argument("send_id", type=int)
def resume_send(send_id: int):
    """Carry on with a paused send."""
    _steer(scheduling.resume, send_id)


@sends.command("cancel")
@click.argument("send_id", type=int)
@click.confirmation_option(prompt="Cancel this send? Recipients not yet sent to will not get it.")
def cancel_send(send_id: int):
    """End a send for good."""
    _steer(scheduling.cancel, send_id)


@sends.command("unschedule")
@click.argument("send_id", type=int)
def unschedule_send(send_id: int):
    """Take a scheduled send off the calendar."""
    _steer(scheduling.unschedule, send_id)


@sends.command("now")
@click.argument("send_id", type=int)
def send_now(send_id: int):
    """Start a scheduled send at once."""
    _steer(scheduling.send_now, send_id, done="Send {send_id} is due now: the beat starts it within {beat} seconds "
                                              "(workers and beat must be running; see the Procfile).")


@sends.command("reschedule")
@click.argument("send_id", type=int)
@click.option("--at", "at_text", required=True, help='Local time, "YYYY-MM-DD HH:MM".')
def reschedule_send(send_id: int, at_text: str):
    """Move a scheduled send to another time."""
    settings, scope = _session()
    with scope as session:
        send = send_record.get_send(session, send_id)
        tz = send_record.publication_of(session, send).timezone
        when = scheduling.parse_send_time(at_text, tz)
        scheduling.reschedule(session, send_id, when.utc, by=by_operator())
    console.print(f"Send {send_id} now goes at {when.describe()}.")


@sends.command("clicks")
@click.argument("send_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (for scripts).")
def send_clicks(send_id: int, as_json: bool):
    """Clicks on the send's links: human, machine and unsure, by link and section (docs/clicks.md)."""
    import json

    from newsletter.feedback.click_results import send_clicks as clicks_of

    settings, scope = _session()
    with scope as session:
        results = clicks_of(session, send_id)
    if as_json:
        click.echo(json.dumps(results.as_json(), indent=2))
        return
    if not results.mode:
        console.print("Clicks are not counted for this publication (set `sending.clicks: aggregate`).")
    t = results.totals
    console.print(f"Send {send_id}: {results.delivered} delivered; {results.messages_with_human_click} messages with "
                  f"a human click ({results.human_click_rate:.1%}); clicks: {t.human} human, {t.machine} machine, "
                  f"{t.unsure} unsure; the hidden link was fetched {results.trap.total} times.", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("#", "link", "section", "human", "machine", "unsure"):
        table.add_column(name, no_wrap=name != "link", justify="right" if name in ("#", "human", "machine", "unsure") else "left")
    for link in results.links:
        f = link.figures
        table.add_row(str(link.number), link.url, link.section, str(f.human), str(f.machine), str(f.unsure))
    console.print(table)
