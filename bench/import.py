"""How fast a subscriber CSV imports, the first time and again.

    python bench/import.py [--rows 100000] [--postgres URL]

Writes a CSV of made-up subscribers (reader000001@example.com, "Reader 1", a
team attribute), then imports it twice into a fresh SQLite database and, when
PostgreSQL is reachable, into a fresh schema there. The second import must
change nothing. Prints rows per second for each import and for an export:
by the clock, and by CPU time (this process, plus the PostgreSQL backend
serving it, read from /proc), which a machine shared with other work
disturbs far less than the clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402

from newsletter.config import settings_from  # noqa: E402
from newsletter.authoring.issue import Publication  # noqa: E402
from newsletter.store.publications import sync_publication  # noqa: E402
from newsletter.store.db import engine_for, make_engine, session_scope  # noqa: E402
from newsletter.store.migrate import upgrade  # noqa: E402
from newsletter.audience.csv_export import export_csv  # noqa: E402
from newsletter.audience.csv_import import import_csv  # noqa: E402
from newsletter.audience.subscribers import create_list  # noqa: E402

DEFAULT_POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEAMS = ("Finance", "Operations", "Nursing", "Estates", "Digital")
PUBLICATION = Publication(
    slug="bench", name="Bench", from_name="Bench", from_email="news@example.org", reply_to="news@example.org",
    postal_address="1 Example Street", web_base_url="https://news.example.org/",
)


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,lists,team\n")
        for n in range(1, rows + 1):
            out.write(f"reader{n:06d}@example.com,Reader {n},,{TEAMS[n % len(TEAMS)]}\n")


def server_cpu(session) -> float:
    """CPU seconds the PostgreSQL backend serving ``session`` has used (0 for SQLite,
    or when the server is on another machine)."""
    if session.get_bind().dialect.name != "postgresql":
        return 0.0
    pid = session.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed_run(settings, work):
    """(result, wall seconds, this process's CPU seconds, the backend's CPU seconds) of ``work(session)``."""
    started, cpu = time.perf_counter(), time.process_time()
    with session_scope(settings) as session:
        backend = server_cpu(session)
        result = work(session)
        backend = server_cpu(session) - backend
    return result, time.perf_counter() - started, time.process_time() - cpu, backend


def line(label: str, what: str, rows: int, wall: float, cpu: float, backend: float) -> str:
    server = f" + server {backend:5.2f} s" if backend else " " * 17
    return (f"  {label:<11} {what:<16} {wall:6.2f} s {rows / wall:>8,.0f} rows/s   CPU {cpu:5.2f} s{server}"
            f" {rows / (cpu + backend):>8,.0f} rows per CPU second")


def run_imports(label: str, url: str, csv_path: Path, rows: int) -> None:
    settings = replace(settings_from({}), database_url=url)
    upgrade(url)
    with session_scope(settings) as session:
        sync_publication(session, PUBLICATION)
        create_list(session, "bench", "readers", "Readers")
    for attempt in ("first import", "same file again"):
        report, wall, cpu, backend = timed_run(settings, lambda session: import_csv(session, csv_path, ["readers"], "bench"))
        expected_added = rows if attempt == "first import" else 0
        if report.added != expected_added or report.updated or report.rejected:
            raise SystemExit(f"{label} {attempt}: unexpected report {report}")
        print(f"{line(label, attempt, rows, wall, cpu, backend)}   added {report.added:,}, unchanged {report.unchanged:,}")
    written, wall, cpu, backend = timed_run(
        settings, lambda session: export_csv(session, csv_path.with_name(f"export-{label}.csv")))
    print(line(label, "export", written, wall, cpu, backend))


def fresh_postgres_schema(server_url: str):
    """A URL whose connections see a new empty schema, and a function that drops it; None if unreachable."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    except sqlalchemy.exc.OperationalError as exc:
        print(f"  postgresql  skipped: not reachable ({str(exc).splitlines()[0]})")
        admin.dispose()
        return None

    def drop() -> None:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    sep = "&" if "?" in server_url else "?"
    url = f"{server_url}{sep}options=-csearch_path%3D{schema}"
    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a PostgreSQL server to use a fresh schema of")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "subscribers.csv"
        write_csv(csv_path, args.rows)
        print(f"{args.rows:,} subscribers, {csv_path.stat().st_size / 2**20:.1f} MiB of CSV")
        run_imports("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", csv_path, args.rows)
        postgres = fresh_postgres_schema(args.postgres)
        if postgres:
            url, drop = postgres
            try:
                run_imports("postgresql", url, csv_path, args.rows)
            finally:
                drop()


if __name__ == "__main__":
    main()
