"""`newsletter check`, `newsletter build` and `newsletter preview`: working on an issue folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from newsletter.authoring.build import build_issue
from newsletter.authoring.checks import check_issue
from newsletter.cli import LazyConsole, main, print_problems
from newsletter.authoring.content import load_issue
from newsletter.errors import CONTENT_ERRORS, EXIT_CODES_HELP
from newsletter.authoring.preview import PreviewServer
from newsletter.authoring.render import render_issue
from newsletter.wording import counted

console = LazyConsole(highlight=False, soft_wrap=True)

folder_argument = click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
templates_option = click.option(
    "--templates", "templates_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of templates that override the defaults (default: the publication's templates/).",
)


@main.command(epilog=EXIT_CODES_HELP)
@folder_argument
@templates_option
def check(folder: Path, templates_dir: Path | None) -> None:
    """Check an issue before it is sent: every error and warning, in file and line order."""
    from newsletter.config import get_settings
    from newsletter.sending.links import sending_warnings

    issue = load_issue(folder)
    problems = check_issue(issue, render_issue(issue, templates_dir))
    problems += sending_warnings(issue.publication, get_settings())
    print_problems(problems)
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    if errors:
        console.print(f"[red]{counted(errors, 'error')}[/], {counted(warnings, 'warning')}: fix the errors before sending.")
        sys.exit(CONTENT_ERRORS)
    console.print(f"[green]No errors[/] in {escape(repr(issue.title))}, {counted(warnings, 'warning')}.")


@main.command(epilog=EXIT_CODES_HELP)
@folder_argument
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the output (default: build/<issue folder name>).")
@templates_option
def build(folder: Path, out_dir: Path | None, templates_dir: Path | None) -> None:
    """Check an issue and, if it has no errors, write its email, sample message and web copy."""
    result = build_issue(folder, out_dir or Path("build") / folder.resolve().name, templates_dir)
    print_problems(result.warnings)
    console.print(f"[green]Built[/] {escape(repr(result.issue.title))} into {result.out_dir}")
    for what, path in result.files.items():
        console.print(f"  {what:<15} {path}")


@main.command(epilog=EXIT_CODES_HELP)
@folder_argument
@click.option("--port", default=8025, show_default=True, help="Port on 127.0.0.1 to serve the preview on.")
@templates_option
def preview(folder: Path, port: int, templates_dir: Path | None) -> None:
    """Serve the email and the web copy side by side; refresh when a file in FOLDER changes.

    Problems are shown on the page, and printed here after each refresh.
    """
    def on_refresh(state) -> None:
        print_problems(state.problems)
        console.print(f"re-rendered ({counted(len(state.problems), 'problem')})")

    server = PreviewServer(folder, templates_dir, port, on_refresh=on_refresh)
    print_problems(server.state.problems)
    console.print(f"Previewing {folder} at {server.url} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
