"""Commands for publications: record one from its folder, list them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from newsletter.cli import LazyConsole, main
from newsletter.config import get_settings
from newsletter.errors import InputError, Problem
from newsletter.store.db import session_scope
from newsletter.store.migrate import upgrade

console = LazyConsole()


@main.group()
def publications():
    """The publications this install sends."""


@publications.command("add")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def add_publication(path: Path):
    """Record (or update) a publication from its folder or its publication.yaml."""
    from newsletter.console.drafts import store_publication_files
    from newsletter.authoring.content import PUBLICATION_FILE, load_publication
    from newsletter.store.publications import sync_publication

    file = path / PUBLICATION_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(Problem(str(path), f"no {PUBLICATION_FILE} here", "give the folder that holds publication.yaml"))
    publication = load_publication(file)
    settings = get_settings()
    upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        row = sync_publication(session, publication)
        # The console lays issues out beside a copy of these files.
        store_publication_files(session, row, file.parent)
    console.print(f"Publication [bold]{publication.slug}[/] ({publication.name}) recorded.")


@publications.command("list")
def list_publications_command():
    """Every recorded publication."""
    from newsletter.store.publications import list_publications

    settings = get_settings()
    upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        rows = [(row.slug, row.name, f"{row.from_name} <{row.from_email}>", row.timezone, row.web_base_url)
                for row in list_publications(session)]
    # The slug is typed into other commands: its column is never cut or
    # wrapped; the others wrap to make room for it.
    table = Table()
    table.add_column("slug", no_wrap=True, min_width=max((len(r[0]) for r in rows), default=4))
    for name in ("name", "from", "time zone", "web copies"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@publications.command("show")
@click.argument("slug")
def show_publication(slug: str):
    """How a publication's mail leaves: transport, account, limits, keys and links.
    Secrets are shown as set or not set, never their values."""
    from newsletter.sending.lanes import sending_summary
    from newsletter.store.publications import get_publication

    settings = get_settings()
    upgrade(settings.effective_database_url)
    with session_scope(settings) as session:
        row = get_publication(session, slug)
        title = f"{row.name} ({row.slug}): {row.from_name} <{row.from_email}>"
        rows = sending_summary(settings, row)
    table = Table(title=title, show_header=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
