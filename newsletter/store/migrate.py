"""Bring a database's schema up to date with Alembic.

The migration scripts ship inside the package (``store/migrations``), so an
installed copy can migrate without an alembic.ini or a checkout.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from newsletter.store.db import engine_for

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # "%" is Alembic's interpolation character; URLs may contain it (%3D).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str) -> None:
    """Apply every migration the database lacks; nothing happens when it is current."""
    if current_revision(url) == head_revision():
        return
    with engine_for(url).begin() as connection:
        command.upgrade(alembic_config(url, connection), "head")


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@lru_cache(maxsize=1)  # the scripts ship with the package: reading them is 20 files parsed
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
