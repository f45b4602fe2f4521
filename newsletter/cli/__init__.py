"""The ``newsletter`` command, a front door: thin, it calls the stages.

Nothing in the stages imports it (tests/test_layering.py).

Each group of commands lives in its own module and registers itself on
``main``; errors people can act on are printed without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError

from newsletter.config import ConfigError
from newsletter.errors import (
    CONTENT_ERRORS,
    USAGE_ERROR,
    ContentError,
    InputError,
    NewsletterError,
    Problem,
    in_reading_order,
)

def by_operator() -> str:
    """Who steered a send from here, for its history: the login and the host
    (the command line has no console account to name)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user with no name
        user = "an operator"
    return f"by {user} on {socket.gethostname()} from the command line"


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
    "newsletter.cli.dkim",
)


def print_problems(problems: list[Problem]) -> None:
    """Every problem on standard error, one a line, in file and line order: the one format
    of loader and check problems (errors.Problem.__str__)."""
    for problem in in_reading_order(problems):
        style = "red" if problem.is_error else "yellow"
        err_console.print(f"[{style}]{escape(str(problem))}[/]", highlight=False, markup=True, soft_wrap=True)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            print_problems(exc.problems)
            sys.exit(CONTENT_ERRORS if isinstance(exc, ContentError) else USAGE_ERROR)
        except (NewsletterError, ConfigError) as exc:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(USAGE_ERROR)
        except OperationalError as exc:
            # The database is down, full or refuses us: say so, not a traceback.
            reason = str(exc.orig or exc).strip().splitlines()[0]
            err_console.print(f"[red]error:[/] the database could not be used ({escape(reason)}); "
                              "check DATABASE_URL and that the server is running", highlight=False, soft_wrap=True)
            sys.exit(USAGE_ERROR)


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
