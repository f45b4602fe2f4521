"""`newsletter demo`: the sample issue, end to end, on the embedded defaults.

It builds the sample issue, makes a list of made-up subscribers, schedules the
issue a few seconds ahead, and starts the same beat and worker processes that
production runs (Procfile), delivering to a mail sink on loopback.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from newsletter.cli import main
from newsletter.config import DEFAULT_DATA_DIR, SAMPLE_PUBLICATION, environment_with, settings_from

console = Console()
SAMPLE = SAMPLE_PUBLICATION / "issues" / "2021-09"
LIST_SLUG = "demo-readers"


@main.command()
@click.option("--subscribers", "count", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--delay", default=5, show_default=True, type=click.IntRange(0, 3600), help="Seconds until the send starts.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR / "demo",
              show_default="var/demo", help="Where the demo keeps everything; emptied first.")
@click.option("--timeout", default=300, show_default=True, help="Give up after this many seconds.")
def demo(count: int, delay: int, folder: Path, timeout: int):
    """Send the sample issue to made-up subscribers, start to finish."""
    from newsletter.cli.devsmtp import MailSink

    folder = folder.absolute()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sink = MailSink(folder / "received").start()
    overrides = {
        "NEWSLETTER_DATA_DIR": str(folder),
        "TRANSPORT": "smtp",
        "SMTP_HOST": sink.host,
        "SMTP_PORT": str(sink.port),
        "SMTP_SECURITY": "none",  # a sink on loopback; never for a real server
        "BEAT_INTERVAL_SECONDS": "1",
        "BASE_URL": "http://127.0.0.1:8000",
    }
    env = environment_with(overrides)
    settings = settings_from(env)
    processes = []
    try:
        send_id, site = _prepare(settings, folder, count, delay)
        processes = _start_processes(env, folder)
        _watch(settings, send_id, timeout, processes)
        _summary(settings, send_id, sink, folder, site)
    finally:
        _stop(processes, env)
        sink.stop()


def _prepare(settings, folder: Path, count: int, delay: int):
    from newsletter.sending import scheduling
    from newsletter.authoring.build import build_issue
    from newsletter.store.db import session_scope
    from newsletter.store.issues import store_issue
    from newsletter.store.migrate import upgrade
    from newsletter.store.models import utcnow
    from newsletter.audience.csv_import import import_csv
    from newsletter.audience.subscribers import create_list, get_list, list_lists

    console.print(f"[bold]1.[/] Building the sample issue from {_shown(SAMPLE)}")
    result = build_issue(SAMPLE, folder / "build", settings.templates_dir)
    rendered = result.rendered
    publication = rendered.issue.publication
    upgrade(settings.effective_database_url)
    csv_path = folder / "subscribers.csv"
    _write_subscribers(csv_path, count)
    with session_scope(settings) as session:
        issue_row = store_issue(session, rendered)
        if not any(row.slug == LIST_SLUG for row in list_lists(session, publication.slug)):
            # On a database of its own (DATABASE_URL) a second demo reuses the list.
            create_list(session, publication.slug, LIST_SLUG, "Demo readers", "Made-up subscribers for the demo")
        report = import_csv(session, csv_path, [LIST_SLUG], publication_slug=publication.slug)
        console.print(
            f"[bold]2.[/] Imported {report.added + report.unchanged + report.updated} made-up subscribers "
            f"from {csv_path.name}"
        )
        mailing_list = get_list(session, publication.slug, LIST_SLUG)
        at = utcnow() + timedelta(seconds=delay)
        # The demo's links point at its own web app on loopback, on purpose; and on a
        # database of its own a second demo sends the sample issue to its readers again.
        send = scheduling.schedule_issue(session, settings, issue_row, [mailing_list], at, allow_private_links=True,
                                         resend=True).send
        when = scheduling.when_from_utc(send.scheduled_at, publication.timezone)
        console.print(f"[bold]3.[/] Scheduled send {send.id} for {when.describe()}")
        send_id = send.id
    return send_id, result


def _shown(path: Path) -> Path:
    """A path as short as it can be said: from here when it is below here."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _write_subscribers(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "team"])
        for n in range(1, count + 1):
            writer.writerow([f"reader{n:06d}@example.com", f"Reader {n}", ("staff", "partner", "resident")[n % 3]])


def _start_processes(env: dict, folder: Path) -> list[subprocess.Popen]:
    """The same worker and beat the Procfile starts, on the embedded broker."""
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    commands = {
        "worker": [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "--queues", "send,control",
                   "--concurrency", "2", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
                   "--loglevel", "INFO", "--hostname", "demo@%h"],
        "beat": [sys.executable, "-m", "celery", "-A", "workers.celery", "beat", "--loglevel", "INFO"],
    }
    console.print("[bold]4.[/] Starting a Celery worker and beat (logs in " f"{logs})")
    processes = []
    for name, command in commands.items():
        out = (logs / f"{name}.log").open("w")
        processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    return processes


def _watch(settings, send_id: int, timeout: int, processes) -> None:
    from newsletter.sending.lifecycle import progress
    from newsletter.store.db import session_scope
    from newsletter.store.models import SendState

    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("waiting for the scheduled time", total=None)
        while time.monotonic() < deadline:
            with session_scope(settings) as session:
                p = progress(session, send_id)
            if p.state != SendState.SCHEDULED:
                bar.update(task, description=f"send {send_id}: {p.state}", total=p.audience or None, completed=p.done)
            if p.state in (SendState.FINISHED, SendState.CANCELLED, SendState.PAUSED):
                return
            for process in processes:
                if process.poll() is not None:
                    raise click.ClickException(f"a demo process stopped early (exit {process.returncode}); see the logs")
            time.sleep(0.3)
    raise click.ClickException(f"the send did not finish within {timeout} seconds; see the logs")


def _summary(settings, send_id: int, sink, folder: Path, build) -> None:
    from newsletter.sending.lifecycle import progress, summary_line
    from newsletter.store.db import session_scope

    with session_scope(settings) as session:
        p = progress(session, send_id)
    console.print(f"\n[bold green]Send {send_id} {p.state}:[/] {summary_line(p)}")
    console.print(f"The mail sink received {sink.received} messages, one .eml file each, in {sink.folder}")
    for label, path in build.files.items():
        console.print(f"  {label}: {path}")


def _stop(processes, env: dict) -> None:
    """The beat first, then the worker; then the beat's last ticks, which no
    worker will take now, are emptied from the control queue, so that
    `newsletter ops status` afterwards finds nothing wrong."""
    for process in reversed(processes):  # started worker, then beat
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    if processes:
        subprocess.run([sys.executable, "-m", "celery", "-A", "workers.celery", "purge", "--force", "--queues", "control"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
