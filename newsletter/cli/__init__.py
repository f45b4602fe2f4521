"""The ``newsletter`` command.

Each group of commands lives in its own module and registers itself on
``main``; errors people can act on are printed without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click
from rich.console import Console

from newsletter.config import ConfigError
from newsletter.errors import InputError, NewsletterError



class LazyConsole:
    """A rich Console made at the moment it prints, so it sees the terminal
    (and COLUMNS) of that moment rather than of import time."""

    def __init__(self, **options):
        self._options = options

    def __getattr__(self, name):
        return getattr(Console(**self._options), name)


console = LazyConsole()
err_console = LazyConsole(stderr=True)

# Modules that add commands to ``main``; one per area.
COMMAND_MODULES = (
    "newsletter.cli.content",
    "newsletter.cli.publications",
    "newsletter.cli.subscribers",
    "newsletter.cli.segments",
    "newsletter.cli.sends",
    "newsletter.cli.demo",
    "newsletter.cli.ops",
    "newsletter.cli.events",
    "newsletter.cli.admins",
)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            for problem in exc.problems:
                style = "red" if problem.is_error else "yellow"
                err_console.print(f"[{style}]{problem}[/]", highlight=False, markup=True, soft_wrap=True)
            sys.exit(2)
        except (NewsletterError, ConfigError) as exc:
            err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=Group)
@click.version_option(package_name="newsletter-pipeline")
def main() -> None:
    """Write, check, schedule and send a newsletter."""


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != _name:
            raise
