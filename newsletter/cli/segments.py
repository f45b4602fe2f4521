"""``newsletter segments ...``: saved conditions on subscribers, and who they hold today."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

from newsletter.audience import segments as segs
from newsletter.cli import LazyConsole, main
from newsletter.cli.subscribers import database, only_publication, publication_option
from newsletter.store.publications import get_publication
from newsletter.wording import counted

console = LazyConsole()

CONDITION_HELP = """\b
A condition, for example:
  organisation is "Stoke-on-Trent City Council"
  joined after 2024-01-01
  in list staff and not in list board
Fields: email, name, source, joined, and custom fields from imports
([job title] for one with spaces). Text: is, is not, contains, starts with,
ends with, is empty, is not empty. Dates (YYYY-MM-DD): before, after, on.
Combine with and, or, not and parentheses."""


@main.group("segments", help="Saved conditions on subscribers, to send to.\n\n" + CONDITION_HELP)
def segments() -> None:
    pass


@segments.command("create")
@click.argument("name")
@click.option("--where", "condition", required=True, metavar="CONDITION", help="Who the segment holds (see `newsletter segments --help`).")
@click.option("--description", default="", help="A sentence on who it is for.")
@publication_option("The publication the segment belongs to (optional when there is only one).")
def segments_create(name: str, condition: str, description: str, publication: str | None) -> None:
    """Save CONDITION as the segment NAME, once it has been checked."""
    with database() as session:
        publication = publication or only_publication(session)
        segment = segs.create_segment(session, publication, name, condition, description)
        shown = segs.segment_preview(session, segment)
    console.print(f"created segment [bold]{name}[/] in {publication}: {counted(shown.count, 'subscriber')} today")


@segments.command("list")
@publication_option("Only this publication's segments.")
def segments_list(publication: str | None) -> None:
    """Every segment and its condition."""
    with database() as session:
        rows = segs.list_segments(session, publication)
    if not rows:
        console.print("no segments yet; `newsletter segments create NAME --where CONDITION` makes one")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("publication", "segment", "condition"):
        table.add_column(column)
    for slug, segment in rows:
        table.add_row(slug, segment.name, segment.condition)
    console.print(table)


@segments.command("show")
@click.argument("name")
@publication_option()
def segments_show(name: str, publication: str | None) -> None:
    """A segment's condition, how many it holds today, and ten of them."""
    with database() as session:
        segment = segs.get_segment(session, publication, name)
        console.print(f"Segment [bold]{segment.name}[/]: {segment.condition}", highlight=False)
        if segment.description:
            console.print(segment.description, highlight=False)
        show_audience(segs.segment_preview(session, segment))


@segments.command("count")
@click.argument("name", required=False)
@click.option("--where", "condition", metavar="CONDITION", help="Count a condition without saving it.")
@publication_option()
def segments_count(name: str | None, condition: str | None, publication: str | None) -> None:
    """How many subscribers the segment NAME (or a --where condition) holds today."""
    if bool(name) == bool(condition):
        raise click.UsageError("give a segment NAME or --where CONDITION (one of the two)")
    with database() as session:
        if name:
            shown = segs.segment_preview(session, segs.get_segment(session, publication, name))
        else:
            pub = get_publication(session, publication or only_publication(session))
            shown = segs.preview(session, pub, segs.publication_list_ids(session, pub), condition)
    console.print(str(shown.count))


def show_audience(shown: segs.Preview) -> None:
    """The count, then up to ten people, so a wrong condition shows before anything is sent."""
    console.print(f"{counted(shown.count, 'subscriber')} today (active, not suppressed, confirmed on a list).")
    if not shown.sample:
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"the first {len(shown.sample)}", title_justify="left")
    for column in ("email", "name", "joined"):
        table.add_column(column)
    for person in shown.sample:
        table.add_row(person.email, person.name, f"{person.created_at:%Y-%m-%d}")
    console.print(table)
