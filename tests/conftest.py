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


def _share_url_builders() -> None:
    """Most web tests make an app of their own, and Werkzeug compiles two URL
    builders for each of its 110 rules every time: 30 ms an app, a sixth of the
    console tests' time. A builder is a pure function of the rule's parts, the
    names of its defaults and whether unknown arguments are appended (it takes
    the rule as its first argument), so identical rules of successive apps share
    one. A rule with a default for one of its own variables (its builder holds
    the converted value) is compiled as before. Production makes one app per
    process and never needs this."""
    from werkzeug.routing.rules import Rule

    compile_builder = Rule._compile_builder
    builders: dict[tuple, object] = {}

    def shared(self, append_unknown: bool = True):
        defaults = self.defaults or {}
        if any(is_dynamic and part in defaults for is_dynamic, part in self._trace):
            return compile_builder(self, append_unknown)
        key = (tuple(self._trace), tuple(map(str, defaults)), append_unknown)
        if key not in builders:
            builders[key] = compile_builder(self, append_unknown)
        return builders[key]

    Rule._compile_builder = shared


_share_url_builders()


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


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """One headless Chromium per test process (each start costs seconds), started
    at the first test that asks; skips, or fails under NEWSLETTER_REQUIRE_SERVICES,
    where Debian's Chromium and its driver are not installed."""
    from tests.web.browser import CHROMEDRIVER, CHROMIUM, Chromium

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Chromium is not installed (scripts/install-browser installs it)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; NEWSLETTER_REQUIRE_SERVICES is set, so this is a failure", pytrace=False)
        pytest.skip(message)
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.quit()


@pytest.fixture
def browser(chromium):
    """Chromium through Selenium, as new to each test: no cookies, no cache, no
    emulated screen or colour scheme, the first window size, an empty log."""
    return chromium.fresh()


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
    url = _in_schema(postgres_server, schema)
    _SCHEMAS[url] = schema
    admin.dispose()
    yield url
    del _SCHEMAS[url]
    _MIGRATED.discard(schema)
    from newsletter.store.db import engine_for

    engine_for.cache_clear()
    if _POOL:
        _POOL[0].give_back(schema)  # emptied for the next test if its structure is unchanged, else dropped
        return
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


# Running every migration costs 0.1 s on SQLite and 0.25 s on PostgreSQL; a
# thousand tests start from a migrated database. Each test process migrates
# once, then each test gets a copy: the SQLite file copied, the PostgreSQL
# schema replayed from pg_dump's text of it, or more often one an earlier test
# left with that structure, emptied (tests/postgres_schemas.py). The copy is the
# migrations' own result (triggers and all); tests/store/test_migrations.py
# runs them for real.


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file with every migration applied, to copy."""
    from newsletter.store.db import engine_for
    from newsletter.store.migrate import upgrade

    path = tmp_path_factory.mktemp("migrated") / "newsletter.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine_for(url).dispose()  # closing the last connection folds the WAL into the file
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server) -> tuple[str, str] | None:
    """A schema's name and pg_dump's SQL of it, with every migration applied
    (since dropped); None where pg_dump cannot be run (each test then migrates its own)."""
    import shutil
    import subprocess

    import sqlalchemy

    from newsletter.store.db import engine_for
    from newsletter.store.migrate import upgrade

    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return None
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        url = _in_schema(postgres_server, schema)
        upgrade(url)
        engine_for(url).dispose()
        dumped = subprocess.run(
            [pg_dump, "--schema", schema, "--no-owner", "--no-privileges", "--inserts", _libpq(postgres_server)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    if dumped.returncode != 0:
        return None
    lines = [line for line in dumped.stdout.splitlines()
             if not line.startswith("\\") and not line.startswith(f"CREATE SCHEMA {schema}")]
    return schema, "\n".join(lines)


@pytest.fixture(scope="session")
def postgres_schema_pool(postgres_server, migrated_postgres):
    """This process's migrated schemas left by tests and emptied, for the next
    tests to take (None without pg_dump); dropped at the end."""
    from tests.postgres_schemas import SchemaPool

    if migrated_postgres is None:
        yield None
        return
    pool = SchemaPool(_libpq(postgres_server), *migrated_postgres)
    _POOL.append(pool)
    yield pool
    _POOL.remove(pool)
    pool.close()


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq (pg_dump, psycopg) takes it."""
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _in_schema(server_url: str, schema: str) -> str:
    sep = "&" if "?" in server_url else "?"
    return f"{server_url}{sep}options=-csearch_path%3D{schema}"


def _migrate(request, url: str) -> None:
    """Give the empty database at ``url`` every migration, from this process's copy."""
    import shutil

    from newsletter.store.migrate import upgrade

    if url.startswith("sqlite:///"):
        target = Path(url.removeprefix("sqlite:///"))
        if not target.exists():
            shutil.copyfile(request.getfixturevalue("migrated_sqlite"), target)
            return
    else:
        schema = _SCHEMAS.get(url)
        pool = request.getfixturevalue("postgres_schema_pool") if schema else None
        if pool is not None:
            if schema in _MIGRATED:  # a test that takes both settings and the cli
                return
            _MIGRATED.add(schema)
            if pool.take(schema):
                return
            import psycopg

            template, sql = request.getfixturevalue("migrated_postgres")
            with psycopg.connect(_libpq(request.getfixturevalue("postgres_server")), autocommit=True) as conn:
                conn.execute(sql.replace(template, schema))
            pool.note_fresh(schema)
            return
    upgrade(url)


@pytest.fixture
def migrate(request):
    """``migrate(url)`` gives a test's own empty database every migration, as
    ``store.migrate.upgrade`` would, from this process's migrated copy."""
    return lambda url: _migrate(request, url)


_SCHEMAS: dict[str, str] = {}  # the schema of each postgres_url this process handed out
_MIGRATED: set[str] = set()  # those of them given their migrations
_POOL: list = []  # this process's SchemaPool, once a test has asked for a migrated schema


@pytest.fixture
def settings(request, tmp_path, database_url) -> Settings:
    """Settings for one test: its own data folder and a migrated database."""
    s = replace(
        settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}),
        database_url=database_url,
        secret_keys=("test-secret-key",),
        base_url="https://newsletter.example.org",
    )
    _migrate(request, s.effective_database_url)
    return s


@pytest.fixture
def session(settings):
    from newsletter.store.db import session_scope

    with session_scope(settings) as s:
        yield s


# The sample issue's publication, as a row: what publication_row() adds unless told otherwise.
PUBLICATION_ROW = dict(
    slug="together-were-better", name="Together We're Better", from_name="Together We're Better",
    from_email="news@example.org", reply_to="communications@example.org", postal_address="1 Partnership Way, Stafford",
    web_base_url="https://newsletter.example.org/together-were-better/",
)


@pytest.fixture
def publication_row():
    """Add a publication row to a session and flush it: the sample issue's
    publication, with any field given changed. Returns the row."""
    from newsletter.store.models import PublicationRow

    def add(session, **changes) -> PublicationRow:
        row = PublicationRow(**(PUBLICATION_ROW | {"settings": {}} | changes))  # a dict of its own
        session.add(row)
        session.flush()
        return row

    return add


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
def smtp():
    """An SMTP server on loopback that keeps what it receives (tests/smtp_server.py)."""
    from tests.smtp_server import SmtpTestServer

    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def cli(monkeypatch, tmp_path, database_url, migrate):
    """Run ``newsletter ARGS...`` against this test's own database and data folder,
    migrated (each command would migrate it on its first run: tests/store/test_migrations.py
    and ``db upgrade``'s tests run the migrations for real)."""
    from click.testing import CliRunner

    from newsletter.cli import main
    from newsletter.config import get_settings

    migrate(database_url)
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


def pytest_collection_modifyitems(config, items):
    """A test that takes the browser fixture starts Chromium: it is slow, whether
    or not its module says so. Tests marked slow (they start processes) run
    first: with two test processes, the long ones then overlap with the many
    short ones instead of leaving one process alone with them at the end."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class TokenClock:
    """The clock timed links (confirmation) are signed and read by, moved on by hand."""

    def __init__(self) -> None:
        self.offset = 0

    def advance(self, seconds: int) -> None:
        self.offset += seconds


@pytest.fixture
def token_clock(monkeypatch) -> TokenClock:
    """Expiry tests move itsdangerous's clock on instead of sleeping."""
    import time

    from itsdangerous.timed import TimestampSigner

    clock = TokenClock()
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) + clock.offset)
    return clock


@pytest.fixture
def fast(settings):
    """Settings with retries that come round quickly and no error budget."""
    return replace(
        settings, retry_base_delay_seconds=0.0, error_budget_ratio=2.0, batch_size=7, smtp_connections=1
    )
