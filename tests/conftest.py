"""Shared fixtures: real PostgreSQL and Redis, isolated per test.

When NEWSLETTER_REQUIRE_SERVICES is true (CI sets it), a service that cannot be
reached fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.config import Settings, settings_from

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

REQUIRE_SERVICES = settings_from(dict(os.environ)).require_services


def _missing(service: str, why: str):
    message = f"{service} is not reachable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(message + "; NEWSLETTER_REQUIRE_SERVICES is set, so this is a failure", pytrace=False)
    pytest.skip(message)


AXE_SCRIPT = ROOT / ".cache" / "node" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script, for the browser tests to inject into a page."""
    if not AXE_SCRIPT.is_file():
        _missing("axe-core", "scripts/install-test-services installs it with npm")
    return AXE_SCRIPT.read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> str:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        _missing("PostgreSQL", str(exc).splitlines()[0])
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server):
    """A URL whose connections see a fresh, empty schema of their own."""
    import sqlalchemy

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in postgres_server else "?"
    yield f"{postgres_server}{sep}options=-csearch_path%3D{schema}"
    from newsletter.store.db import engine_for

    engine_for.cache_clear()
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'newsletter.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'newsletter.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    """Settings for one test: its own data folder and a migrated database."""
    from newsletter.store.migrate import upgrade

    s = replace(
        settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}),
        database_url=database_url,
        secret_keys=("test-secret-key",),
        base_url="https://newsletter.example.org",
    )
    upgrade(s.effective_database_url)
    return s


@pytest.fixture
def session(settings):
    from newsletter.store.db import session_scope

    with session_scope(settings) as s:
        yield s


@pytest.fixture(scope="session")
def redis_server() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        _missing("Redis", str(exc))
    return REDIS_URL


REDIS_TEST_DATABASES = range(1, 16)  # 0 is left to people
REDIS_LEASE_SECONDS = 900


@pytest.fixture
def redis_url(redis_server):
    """A Redis database number of this test's own, flushed before and after.

    Databases 1-15 are leased through a key in database 0 (SET NX with an
    expiry), so several test runs on one machine, and their xdist workers,
    never share a database at the same time.
    """
    import time

    import redis

    lessor = redis.Redis.from_url(f"{redis_server}/0")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + REDIS_LEASE_SECONDS
    db = None
    while db is None:
        for candidate in REDIS_TEST_DATABASES:
            if lessor.set(f"newsletter-tests:db:{candidate}", token, nx=True, ex=REDIS_LEASE_SECONDS):
                db = candidate
                break
        else:
            if time.monotonic() > deadline:
                pytest.fail("no free Redis test database (1-15) in 15 minutes", pytrace=False)
            time.sleep(0.2)
    url = f"{redis_server}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    # Give the lease back only if it is still ours.
    if lessor.get(f"newsletter-tests:db:{db}") == token.encode():
        lessor.delete(f"newsletter-tests:db:{db}")
    lessor.close()


@pytest.fixture
def cli(monkeypatch, tmp_path, database_url):
    """Run ``newsletter ARGS...`` against this test's own database and data folder."""
    from click.testing import CliRunner

    from newsletter.cli import main
    from newsletter.config import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("TRANSPORT", "outbox")
    monkeypatch.setenv("SECRET_KEYS", "cli-test-key")
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that tables never cut a value
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()
