"""`newsletter ops`: the queues, the workers and every send, in the terminal."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from newsletter.sending import scheduling, send_record
from newsletter.cli import LazyConsole, by_operator, main
from newsletter.cli.sends import sends
from newsletter.config import get_settings
from newsletter.ops.status import Status, collect_status
from newsletter.store.db import session_scope
from newsletter.store.migrate import upgrade
from newsletter.wording import counted

console = LazyConsole()
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}


def current_status() -> Status:
    settings = get_settings()
    upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        return collect_status(session, settings)


@main.group()
def ops():
    """See the queues, the workers and every send."""


@ops.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON (for scripts).")
def status(as_json: bool):
    """Queues, workers, active and recent sends, what is next, and problems."""
    snapshot = current_status()
    if as_json:
        click.echo(json.dumps(snapshot.to_dict(), indent=2))
        return
    console.print(render(snapshot))


@ops.command()
@click.option("--interval", type=click.FloatRange(0.5, 300), default=2.0, show_default=True,
              help="Seconds between refreshes.")
def watch(interval: float):
    """The same as status, refreshed live, with a progress bar per send. Ctrl-C stops."""
    # Live keeps state on its console: one real Console, not a lazy one.
    live = Live(render(current_status(), bars=True), console=Console(), auto_refresh=False)
    try:
        with live:
            while True:
                time.sleep(interval)
                live.update(render(current_status(), bars=True), refresh=True)
    except KeyboardInterrupt:
        pass


@ops.command()
@click.option("--worker", is_flag=True, help="Check that workers answer: a running worker for every queue.")
@click.option("--queue", "queue_names", multiple=True, help="With --worker: only these queues (repeatable).")
@click.option("--node", help="With --worker: this worker (its Celery node name, e.g. send@host) must be running.")
def health(worker: bool, queue_names: tuple[str, ...], node: str | None):
    """Exit 0 when healthy, 1 when not: for a process manager or a load balancer.

    Without --worker: the database and the broker answer.
    """
    from newsletter.ops.health import database_health, worker_health

    settings = get_settings()
    result = worker_health(settings, queue_names, node) if worker else database_health(settings)
    (console if result.ok else Console(stderr=True)).print(result.message, highlight=False)
    sys.exit(0 if result.ok else 1)


@sends.command("retry-failed")
@click.argument("send_id", type=int)
def retry_failed(send_id: int):
    """Send again to the failed recipients of a send (not suppressed, not hard-bounced)."""
    settings = get_settings()
    upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        count = scheduling.retry_failed(session, send_id, by=by_operator())
        state = send_record.get_send(session, send_id).state
    if count:
        console.print(f"{counted(count, 'failed recipient')} of send {send_id} will be sent again; the send is [bold]{state}[/].")
    else:
        console.print(f"Send {send_id} has no failed recipient to retry (suppressed and hard-bounced ones stay failed).")


# --- rendering --------------------------------------------------------------------


def render(snapshot: Status, *, bars: bool = False) -> Group:
    now = snapshot.generated_at
    parts = [problems_table(snapshot), queues_table(snapshot), workers_table(snapshot), sends_table(snapshot, bars)]
    parts += errors_tables(snapshot)
    parts.append(scheduled_table(snapshot, now))
    parts.append(f"[dim]as of {now:%Y-%m-%d %H:%M:%S} UTC[/]")
    return Group(*parts)


def problems_table(snapshot: Status):
    if not snapshot.problems:
        return "[green]No problems.[/]"
    table = Table("severity", "where", "problem", "what to do", title="Problems", title_justify="left")
    for p in snapshot.problems:
        style = SEVERITY_STYLE.get(p.severity, "")
        table.add_row(f"[{style}]{p.severity}[/]", p.subject, p.message, p.fix)
    return table


def queues_table(snapshot: Status) -> Table:
    consumers = {q: sum(1 for w in snapshot.workers if w.alive and q in w.queues) for q in (x.name for x in snapshot.queues)}
    table = Table("queue", "waiting", "oldest", "workers", title="Queues", title_justify="left")
    for q in snapshot.queues:
        table.add_row(q.name, f"{q.depth:,}", seconds(q.oldest_age_seconds), str(consumers[q.name]))
    return table


def workers_table(snapshot: Status) -> Table:
    table = Table("worker", "state", "queues", "concurrency", "in progress", "last heartbeat",
                  title="Workers", title_justify="left")
    for w in snapshot.workers:
        style = {"running": "green", "gone": "red"}.get(w.state, "dim")
        table.add_row(w.node, f"[{style}]{w.state}[/]", ",".join(w.queues), str(w.concurrency), str(w.active_tasks),
                      f"{seconds(w.seconds_since_seen)} ago")
    if not snapshot.workers:
        table.add_row("[red]none[/]", "", "", "", "", "")
    return table


def duplicates_cell(s) -> str:
    """Rows that may have gone out more than once, and the extra copies when more than one each."""
    more = s.extra_copies > s.possible_duplicates
    return f"{s.possible_duplicates} (+{s.extra_copies})" if more else str(s.possible_duplicates)


def sends_table(snapshot: Status, bars: bool):
    if not snapshot.sends:
        return "[dim]No active or recent sends.[/]"
    # Short headers: the table must fit an ordinary terminal.
    columns = ["send", "issue → list", "state", "sent", "failed", "skip", "pending", "dup?", "orphan",
               "msg/s", "finish", "bounce", "compl."]
    table = Table(*columns, *(["progress"] if bars else []), title="Sends (times in UTC)", title_justify="left")
    for s in snapshot.sends:
        row = [
            str(s.send_id), f"{s.issue} → {s.list}", s.state, f"{s.sent:,}", f"{s.failed:,}", f"{s.skipped:,}",
            f"{s.pending:,}", duplicates_cell(s), f"{s.orphaned_claims:,}", f"{s.rate_per_second:.1f}",
            f"{s.expected_finish_at:%H:%M:%S}" if s.expected_finish_at else "", f"{s.bounce_rate:.2%}",
            f"{s.complaint_rate:.2%}",
        ]
        if bars:
            row.append(ProgressBar(total=max(s.audience, 1), completed=s.done, width=24))
        table.add_row(*row)
    return table


def errors_tables(snapshot: Status) -> list[Table]:
    tables = []
    for s in snapshot.sends:
        if s.errors:
            table = Table("count", "reason", title=f"Send {s.send_id}: failures and retries by reason", title_justify="left")
            for group in s.errors:
                table.add_row(f"{group.count:,}", group.reason)
            tables.append(table)
    return tables


def scheduled_table(snapshot: Status, now: datetime):
    if not snapshot.scheduled:
        return "[dim]Nothing scheduled.[/]"
    table = Table("send", "issue → list", "at (UTC)", "in", title="Next scheduled", title_justify="left")
    for s in snapshot.scheduled:
        table.add_row(str(s.send_id), f"{s.publication}/{s.issue} → {s.list}", f"{s.scheduled_at:%Y-%m-%d %H:%M}",
                      seconds((s.scheduled_at - now).total_seconds()))
    return table


def seconds(value: float | None) -> str:
    """12s, 4m05s, 3h10m: ages and delays people read at a glance."""
    if value is None:
        return "-"
    value = int(max(value, 0))
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m{value % 60:02d}s"
    return f"{value // 3600}h{value % 3600 // 60:02d}m"
