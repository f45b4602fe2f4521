"""Commands for the database, lists and subscribers.

``newsletter db upgrade``, ``newsletter lists ...``, ``newsletter subscribers ...``.
Every command that touches the database first brings its schema up to date,
so a fresh install works without a separate setup step.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from newsletter.audience import csv_export, csv_import
from newsletter.audience import subscribers as subs
from newsletter.cli import LazyConsole, err_console, main
from newsletter.config import get_settings
from newsletter.errors import InputError, Problem
from newsletter.store.publications import known_publications, list_publications
from newsletter.store import migrate
from newsletter.store.db import session_scope
from newsletter.wording import counted

console = LazyConsole()
PROBLEMS_SHOWN = 50  # an import of a wrong file could otherwise print a line per row
PROBLEMS_SHOWN_WITH_FILE = 5  # when --errors FILE has them all


@contextmanager
def database() -> Iterator[Session]:
    settings = get_settings()
    migrate.upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        yield session


def publication_option(help_text: str = "The publication the list belongs to (needed only when several have one of that name)."):
    return click.option("--publication", "publication", metavar="SLUG", default=None, help=help_text)


# -- db ----------------------------------------------------------------------


@main.group("db")
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply any migrations the database lacks (safe to repeat)."""
    url = get_settings().effective_database_url
    migrate.upgrade(url)
    console.print(f"database schema at revision {migrate.current_revision(url)}")


# -- lists -------------------------------------------------------------------


@main.group("lists")
def lists() -> None:
    """Mailing lists: the audiences an issue is sent to."""


@lists.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="What people see, e.g. 'Monthly newsletter'.")
@click.option("--description", default="", help="A sentence on who the list is for.")
@publication_option("The publication the list belongs to (optional when there is only one).")
def lists_create(slug: str, name: str, description: str, publication: str | None) -> None:
    """Create the list SLUG."""
    with database() as session:
        publication = publication or only_publication(session)
        subs.create_list(session, publication, slug, name, description)
    console.print(f"created list [bold]{slug}[/] in {publication}")


def only_publication(session: Session) -> str:
    rows = list_publications(session)
    if len(rows) == 1:
        return rows[0].slug
    if not rows:
        raise InputError(Problem("--publication", known_publications(session)))
    raise InputError(Problem("--publication", "there are several publications", "say which: " + ", ".join(r.slug for r in rows)))


@lists.command("list")
@publication_option("Only this publication's lists.")
def lists_list(publication: str | None) -> None:
    """Show the lists and how many people are on each."""
    with database() as session:
        summaries = subs.list_lists(session, publication)
    if not summaries:
        console.print("no lists yet: create one with `newsletter lists create SLUG --name NAME`")
        return
    table = Table("publication", "list", "name", "confirmed", "unconfirmed", "unsubscribed")
    for s in summaries:
        table.add_row(s.publication, s.slug, s.name, f"{s.confirmed:,}", f"{s.unconfirmed:,}", f"{s.unsubscribed:,}")
    console.print(table)


@lists.command("remove")
@click.argument("slug")
@publication_option()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def lists_remove(slug: str, publication: str | None, yes: bool) -> None:
    """Delete the list SLUG and who is on it (refused once it has been sent to)."""
    with database() as session:
        subs.get_list(session, publication, slug)
        if not yes:
            click.confirm(f"Delete the list {slug} and all its memberships?", abort=True)
        subs.remove_list(session, publication, slug)
    console.print(f"removed list [bold]{slug}[/]")


# -- subscribers -------------------------------------------------------------


@main.group("subscribers")
def subscribers() -> None:
    """The people on the lists."""


def parse_attributes(pairs: tuple[str, ...]) -> dict[str, str]:
    attributes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(Problem("--attribute", f"{pair!r} is not KEY=VALUE", "e.g. --attribute team=Finance"))
        attributes[key.strip()] = value.strip()
    return attributes


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="How to greet them.")
@click.option("--list", "list_slugs", multiple=True, metavar="SLUG", help="A list to put them on (repeatable).")
@click.option("--attribute", "attribute_pairs", multiple=True, metavar="KEY=VALUE", help="A custom attribute (repeatable).")
@click.option("--unconfirmed", is_flag=True, help="Add them as awaiting confirmation instead of confirmed.")
@publication_option()
def subscribers_add(email, name, list_slugs, attribute_pairs, unconfirmed, publication) -> None:
    """Add EMAIL (or update their name and attributes) and put them on lists."""
    status = "unconfirmed" if unconfirmed else "confirmed"
    with database() as session:
        row = subs.add_subscriber(
            session, email, name, list_slugs, parse_attributes(attribute_pairs), status, publication_slug=publication,
            settings=get_settings(),
        )
        address = row.email
    on = f" on {', '.join(list_slugs)} ({status})" if list_slugs else ""
    console.print(f"added {address}{on}", highlight=False)


@subscribers.command("remove")
@click.argument("email")
@click.option("--list", "list_slug", metavar="SLUG", help="Only take them off this list.")
@publication_option()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def subscribers_remove(email, list_slug, publication, yes) -> None:
    """Take EMAIL off a list, or delete them entirely (a later import may add them back;
    `subscribers unsubscribe` is for people who asked to stop)."""
    with database() as session:
        row = subs.get_subscriber(session, email)
        if list_slug is None and not yes:
            click.confirm(f"Delete {row.email} and all their memberships?", abort=True)
        subs.remove_subscriber(session, email, list_slug, publication_slug=publication)
        address = row.email
    where = f"from {list_slug}" if list_slug else "entirely"
    console.print(f"removed {address} {where}", highlight=False)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "list_slug", metavar="SLUG", help="Only from this list; without it, from everything.")
@publication_option()
def subscribers_unsubscribe(email, list_slug, publication) -> None:
    """Record that EMAIL asked to stop (imports will not resubscribe them)."""
    with database() as session:
        row = subs.unsubscribe(session, email, list_slug, publication_slug=publication)
        address = row.email
    where = f"from {list_slug}" if list_slug else "from everything"
    console.print(f"unsubscribed {address} {where}", highlight=False)


@subscribers.command("show")
@click.argument("email")
@publication_option("Only this publication (without it, each publication whose lists they are on).")
def subscribers_show(email, publication) -> None:
    """One person: their lists, any suppression, and what happened to each issue
    sent to them, newest first (the console's subscriber page, in the terminal)."""
    from sqlalchemy import select

    from newsletter.console.subscribers import subscriber_view
    from newsletter.store.models import MailingList, Membership, PublicationRow

    with database() as session:
        row = subs.get_subscriber(session, email)
        query = (select(PublicationRow.id, PublicationRow.slug).join(MailingList).join(Membership)
                 .where(Membership.subscriber_id == row.id).distinct().order_by(PublicationRow.slug))
        if publication:
            query = query.where(PublicationRow.slug == publication)
        views = [(slug, subscriber_view(session, publication_id, row.id)) for publication_id, slug in session.execute(query)]
        name = f" ({row.name})" if row.name else ""
        console.print(f"[bold]{escape(row.email)}[/]{escape(name)}: {row.status}, subscriber {row.id} since "
                      f"{row.created_at:%Y-%m-%d %H:%M} UTC", highlight=False)
        for key, value in sorted((row.attributes or {}).items()):
            console.print(f"  {escape(key)}: {escape(str(value))}", highlight=False)
        if views and views[0][1].suppression is not None:
            suppression = views[0][1].suppression
            console.print(f"[yellow]Suppressed[/] since {suppression.created_at:%Y-%m-%d %H:%M} UTC "
                          f"({escape(suppression.reason)}, {escape(suppression.source)}): never mailed again",
                          highlight=False)
        if not views:
            console.print(f"not on any list{' of ' + publication if publication else ''}", highlight=False)
        for slug, view in views:
            console.print(f"\n[bold]{slug}[/]: " + ", ".join(f"{line.slug} ({line.status})" for line in view.lists),
                          highlight=False)
            table = Table("when (UTC)", "what", "detail", box=None, pad_edge=False)
            for moment in view.history:
                table.add_row(f"{moment.at:%Y-%m-%d %H:%M}", escape(moment.text), escape(moment.detail))
            console.print(table)


@subscribers.command("purge-unconfirmed")
def subscribers_purge_unconfirmed() -> None:
    """Forget sign-ups not confirmed within UNCONFIRMED_RETENTION_DAYS (the beat does this too)."""
    from newsletter.audience.signup import purge_unconfirmed

    settings = get_settings()
    with database() as session:
        report = purge_unconfirmed(session, settings)
    console.print(f"{report.memberships_deleted} unconfirmed memberships older than "
                  f"{settings.unconfirmed_retention_days} days deleted, "
                  f"{report.subscribers_deleted} subscribers with nothing else left deleted")


def paging_options(command):
    command = click.option("--after", type=int, default=None, metavar="ID", help="Show those after this id (the next page).")(command)
    command = click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)(command)
    command = click.option("--status", default=None, help="active|unsubscribed|erased; with --list: confirmed|unconfirmed|unsubscribed.")(command)
    command = publication_option()(command)
    return click.option("--list", "list_slug", metavar="SLUG", help="Only people on this list.")(command)


@subscribers.command("list")
@paging_options
def subscribers_list(list_slug, publication, status, limit, after) -> None:
    """Show subscribers, a page at a time."""
    show_page(None, list_slug, publication, status, limit, after)


@subscribers.command("search")
@click.argument("query")
@paging_options
def subscribers_search(query, list_slug, publication, status, limit, after) -> None:
    """Find subscribers whose address or name contains QUERY (any case)."""
    show_page(query, list_slug, publication, status, limit, after)


def show_page(query, list_slug, publication, status, limit, after) -> None:
    with database() as session:
        rows = subs.find_subscribers(
            session, query, list_slug, status, limit=limit, after_id=after, publication_slug=publication
        )
        on_lists = subs.memberships_of(session, [row.id for row in rows])
    if not rows:
        console.print("no subscribers match")
        return
    table = Table("id", "email", "name", "status", "lists")
    for row in rows:
        memberships = ", ".join(f"{slug} ({status})" for slug, status in on_lists.get(row.id, []))
        table.add_row(str(row.id), row.email, row.name, row.status, memberships)
    console.print(table)
    if len(rows) == limit:
        console.print(f"more: add --after {rows[-1].id}", highlight=False)


@subscribers.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("--list", "list_slugs", multiple=True, metavar="SLUG", help="Put everyone on this list (repeatable), as well as the file's lists column.")
@click.option("--unconfirmed", is_flag=True, help="Add them as awaiting confirmation instead of confirmed.")
@click.option("--errors", "errors_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=str),
              help="Write every problem (line, column, reason, what to do) to this CSV file.")
@publication_option("The publication whose lists the file names.")
def subscribers_import(path, list_slugs, unconfirmed, errors_path, publication) -> None:
    """Add or update the people in the CSV file PATH.

    Columns: email (required), name, lists (slugs separated by ";"); other
    columns become custom attributes. Rows that cannot be used are listed by
    line (the first 50; all of them with --errors FILE) and the rest are
    imported; the exit status is 1 when any were rejected. Importing the same
    file again changes nothing, and nobody who unsubscribed or is suppressed
    is signed up again.
    """
    status = "unconfirmed" if unconfirmed else "confirmed"
    check_errors_path(path, errors_path)
    with database() as session:
        report = csv_import.import_csv(session, path, list_slugs, publication, status, settings=get_settings())
    if errors_path:
        csv_import.write_problems(report, errors_path)
    show_report(report, errors_path)
    if report.rejected:
        sys.exit(1)


def check_errors_path(path: str, errors_path: str | None) -> None:
    """--errors FILE must not name the file being imported (it would be overwritten)."""
    if errors_path and Path(errors_path).resolve() == Path(path).resolve():
        raise InputError(Problem("--errors", "is the file being imported", "name another file for the problems"))


def show_report(report: csv_import.ImportReport, errors_path: str | None = None) -> None:
    show_problems(report, errors_path)
    table = Table("added", "updated", "unchanged", "not resubscribed", "rejected", title=escape(report.path))
    table.add_row(*(f"{n:,}" for n in (report.added, report.updated, report.unchanged, report.not_resubscribed, report.rejected)))
    console.print(table)


def show_problems(report, errors_path: str | None = None) -> None:
    """An import's problems (of subscribers or suppressions): the first 50, or the first few
    and where the rest are when --errors FILE has them all."""
    shown = PROBLEMS_SHOWN if errors_path is None else PROBLEMS_SHOWN_WITH_FILE
    for problem in report.problems[:shown]:
        style = "red" if problem.is_error else "yellow"
        err_console.print(f"[{style}]{escape(str(problem))}[/]", highlight=False, soft_wrap=True, markup=True)
    warnings = len(report.problems) - report.rejected
    if errors_path is not None:
        err_console.print(f"{counted(report.rejected, 'row')} rejected and {counted(warnings, 'warning')}: "
                          f"every problem is in {errors_path}", highlight=False, markup=False)
    elif len(report.problems) > shown:
        err_console.print(f"... and {len(report.problems) - shown} more; import again with --errors FILE "
                          "to get every problem in a CSV file", highlight=False, markup=False)


@subscribers.command("export")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--list", "list_slug", metavar="SLUG", help="Only this list's members.")
@click.option("--unconfirmed", is_flag=True, help="Export those awaiting confirmation instead of the confirmed.")
@publication_option()
def subscribers_export(path, list_slug, unconfirmed, publication) -> None:
    """Write subscribers to the CSV file PATH ("-" for standard output), in the columns import reads."""
    status = "unconfirmed" if unconfirmed else "confirmed"
    with database() as session:
        if path == "-":
            csv_export.export_csv(session, sys.stdout, list_slug, publication_slug=publication, status=status)
            return
        count = csv_export.export_csv(session, path, list_slug, publication_slug=publication, status=status)
    err_console.print(f"wrote {count} subscribers to {path}", highlight=False)
