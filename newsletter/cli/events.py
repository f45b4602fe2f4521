"""Commands for bounces, suppression and erasure.

``newsletter bounces read``, ``newsletter suppressions list|add|remove``,
``newsletter subscribers erase`` and ``newsletter events purge``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from newsletter.feedback import bounces, events
from newsletter.audience import erasure
from newsletter.audience.suppression_import import IMPORT_REASONS
from newsletter.cli import main
from newsletter.cli.subscribers import database, subscribers
from newsletter.config import get_settings
from newsletter.errors import InputError, Problem

console = Console()


@main.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports for SMTP setups (VERP return paths)."""


@bounces_group.command("read")
@click.option("--maildir", type=click.Path(path_type=Path), help="A Maildir folder the bounce address delivers to.")
@click.option("--imap", "imap_url", metavar="URL", help="imaps://user:password@host/FOLDER")
def bounces_read(maildir: Path | None, imap_url: str | None) -> None:
    """Read unread bounce and complaint reports, apply them, mark them read."""
    if bool(maildir) == bool(imap_url):
        raise InputError(Problem("options", "say where the reports are", "give either --maildir PATH or --imap URL"))
    settings = get_settings()
    with database() as session:
        report = (bounces.read_maildir(session, settings, maildir) if maildir
                  else bounces.read_imap(session, settings, imap_url))
    e = report.events
    console.print(f"{report.messages} messages read, {report.reports} reports tied to a delivery; "
                  f"{e.recorded} events recorded ({e.duplicates} seen before), {len(e.suppressed)} addresses suppressed")


@main.group("suppressions")
def suppressions() -> None:
    """Addresses that are never mailed again, whatever their lists say."""


@suppressions.command("list")
@click.option("--reason", type=click.Choice(events.SUPPRESSION_REASONS), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after", type=int, default=None, metavar="ID", help="Show those after this id (the next page).")
def suppressions_list(reason: str | None, limit: int, after: int | None) -> None:
    """Show suppressed addresses (erased ones appear only as a hash)."""
    with database() as session:
        rows = events.list_suppressions(session, reason, limit, after)
    table = Table("id", "address", "reason", "since", "why")
    for row in rows:
        table.add_row(str(row.id), row.email, row.reason, f"{row.created_at:%Y-%m-%d}", row.source)
    console.print(table)
    if len(rows) == limit:
        console.print(f"more with --after {rows[-1].id}")


@suppressions.command("add")
@click.argument("email")
@click.option("--note", default="", help="Why, for the record.")
def suppressions_add(email: str, note: str) -> None:
    """Never mail EMAIL again."""
    with database() as session:
        added = events.suppress_manually(session, email, note)
    console.print(f"suppressed {email}" if added else f"{email} was suppressed already")


@suppressions.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("--reason", type=click.Choice(IMPORT_REASONS), default="manual",
              show_default=True, help="For rows without a reason column (or with it empty).")
@click.option("--errors", "errors_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=str),
              help="Write every problem (line, column, reason, what to do) to this CSV file.")
def suppressions_import(path: str, reason: str, errors_path: str | None) -> None:
    """Suppress every address in the CSV file PATH: the bounces, complaints and
    unsubscribes a team brings from another provider, before its first send.

    Columns: email (required), reason (hard_bounce, complaint, soft_bounce or
    manual), note. Rows that cannot be used are listed by line and the rest are
    taken; the exit status is 1 when any were rejected. An address suppressed
    already keeps its entry, so importing the file again changes nothing.
    """
    from rich.markup import escape

    from newsletter.audience.csv_import import write_problems
    from newsletter.audience.suppression_import import import_suppressions
    from newsletter.cli.subscribers import check_errors_path, show_problems

    check_errors_path(path, errors_path)
    with database() as session:
        report = import_suppressions(session, path, reason)
    if errors_path:
        write_problems(report, errors_path)
    show_problems(report, errors_path)
    table = Table("suppressed now", "suppressed already", "rejected", title=escape(report.path))
    table.add_row(f"{report.added:,}", f"{report.already:,}", f"{report.rejected:,}")
    console.print(table)
    if report.rejected:
        sys.exit(1)


@suppressions.command("remove")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def suppressions_remove(email: str, yes: bool) -> None:
    """Allow mail to EMAIL again (it still has to be on a list)."""
    if not yes:
        click.confirm(f"Take {email} off the suppression list? It bounced, complained or was removed by hand.", abort=True)
    with database() as session:
        row = events.remove_suppression(session, email)
    console.print(f"{row.email} is no longer suppressed (it was: {row.reason})")


@subscribers.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def subscribers_erase(email: str, yes: bool) -> None:
    """Erase EMAIL's personal data for good; only a hash stays, so it is never mailed again."""
    if not yes:
        click.confirm(f"Erase everything held on {email}? This cannot be undone.", abort=True)
    with database() as session:
        report = erasure.erase_subscriber(session, email)
    console.print(
        f"erased: subscriber {'deleted' if report.subscriber_deleted else 'not found'}, "
        f"{report.memberships_deleted} memberships, {report.ledger_rows_anonymised} ledger rows and "
        f"{report.events_anonymised} events and {report.audit_entries_anonymised} audit entries anonymised; "
        "the address is suppressed as a hash"
    )


@main.group("events")
def events_group() -> None:
    """Provider events."""


@events_group.command("purge")
def events_purge() -> None:
    """Empty raw payloads past RAW_EVENT_RETENTION_DAYS and forget expired webhook nonces."""
    with database() as session:
        report = events.purge_old_payloads(session, get_settings())
    console.print(f"{report.payloads_emptied} payloads emptied, {report.nonces_deleted} nonces forgotten")
