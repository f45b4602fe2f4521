"""The click redirect under load: requests a second on one core, with counting on.

    python bench/clicks.py [--seconds 10] [--clients 3] [--postgres URL]

Sets up a fresh PostgreSQL schema with the sample issue (its publication counts
clicks: ``sending.clicks: aggregate``) and a send of it, and makes the send's
counted links exactly as a worker does (``authoring/counted_links.rewrite``), each with
the ``m=`` of one of 5,000 made-up messages. Then the web app runs under
gunicorn as the Procfile starts it (one worker process, gthread), pinned to one
core, and client processes pinned to the other core follow links over
keep-alive connections, with a browser's user agent, for ``--seconds``. A
redis-server of its own holds the burst rule's short-lived keys, shared as in
a deployment with ``REDIS_URL``.

Prints requests a second, the worker's CPU time per request (the figure that
does not depend on what else the machine is doing), and checks that every
redirect answered was counted in the database, in how many row writes. Then
the same load again and the web app is killed with SIGKILL: the clicks
answered but not counted must be at most about one second's worth.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import sqlalchemy  # noqa: E402

from newsletter.store.db import engine_for, make_engine, session_scope  # noqa: E402

SAMPLE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"
DEFAULT_POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
KEYS = ("bench-clicks-key",)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def fresh_schema(server_url: str) -> tuple[str, callable]:
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    sep = "&" if "?" in server_url else "?"
    url = f"{server_url}{sep}options=-csearch_path%3D{schema}"
    return url, drop


def prepare(database_url: str, base_url: str) -> list[str]:
    """Store the sample issue and a send of it; the paths of its counted links, one per message and link."""
    from newsletter.audience.subscribers import add_subscriber, create_list, get_list
    from newsletter.authoring.content import load_issue
    from newsletter.authoring.render import render_issue
    from newsletter.config import settings_from
    from newsletter.authoring.counted_links import ClickRefs, rewrite
    from newsletter.sending.scheduling import schedule_send
    from newsletter.store.issues import store_issue
    from newsletter.store.migrate import upgrade

    settings = settings_from({"DATABASE_URL": database_url, "SECRET_KEYS": KEYS[0], "BASE_URL": base_url})
    upgrade(database_url)
    rendered = render_issue(load_issue(SAMPLE))
    assert rendered.issue.publication.sending.clicks == "aggregate"
    with session_scope(settings) as session:
        row = store_issue(session, rendered)
        create_list(session, rendered.issue.publication.slug, "news", "News")
        add_subscriber(session, "reader@example.com", "Reader", ["news"], publication_slug=rendered.issue.publication.slug)
        send = schedule_send(session, row, get_list(session, rendered.issue.publication.slug, "news"), at=None)
        send_id = send.id
    html, _, links = rewrite(rendered.html, rendered.text, keys=KEYS, base_url=base_url, send_id=send_id)
    tokens = sorted({part.split("?")[0] for part in html.split(f"{base_url}/c/")[1:]})
    tokens = [t for t in tokens if t.split(".")[1] != "0"]  # not the trap
    assert len(tokens) == len(links)
    refs = ClickRefs("aggregate", KEYS)
    rng = random.Random(1)
    paths = []
    for _ in range(5000):  # each message: one or two links, made an hour before
        nonce, made = refs.make(None).split(".")
        ref = f"{nonce}.{_b36(int(made, 36) - 3600)}"
        paths += [f"/c/{rng.choice(tokens)}?m={ref}" for _ in range(rng.choice((1, 2)))]
    rng.shuffle(paths)
    return paths


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"


def in_process(database_url: str, base_url: str, paths: list[str]) -> None:
    """Our part of a request, without HTTP: the redirect (token, counter) and the counter's write."""
    from newsletter.config import settings_from
    from newsletter.web import create_app

    settings = settings_from({"DATABASE_URL": database_url, "SECRET_KEYS": KEYS[0], "BASE_URL": base_url,
                              "LOG_LEVEL": "WARNING"})
    app = create_app(settings)
    counter = app.extensions["newsletter.clicks"]
    counter._pid = os.getpid()  # no thread of its own here: written by hand below
    environs = [{"REQUEST_METHOD": "GET", "PATH_INFO": p.partition("?")[0], "QUERY_STRING": p.partition("?")[2],
                 "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": BROWSER, "wsgi.url_scheme": "http"} for p in paths]
    answer = lambda status, headers: None
    for environ in environs[:200]:
        app.wsgi_app(environ, answer)
    counter.flush()
    best_redirect = best_write = float("inf")
    for _ in range(3):
        started = time.process_time()
        for environ in environs:
            app.wsgi_app(environ, answer)
        redirected = time.process_time()
        counter.flush()
        written = time.process_time()
        best_redirect = min(best_redirect, (redirected - started) / len(environs))
        best_write = min(best_write, (written - redirected) / len(environs))
    engine_for(database_url).dispose()
    print(f"in process       {1e6 * best_redirect:8,.0f} µs/redirect (token, classing rules 1-2, queue) "
          f"+ {1e6 * best_write:,.0f} µs/click to class and write (best of 3)")
    with engine_for(database_url).begin() as conn:
        for table in ("click_counts", "click_messages"):
            conn.execute(sqlalchemy.text(f"DELETE FROM {table}"))


def client(port: int, paths: list[str], seconds: float, core: int, results) -> None:
    os.sched_setaffinity(0, {core})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = redirected = 0
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            connection.request("GET", paths[n % len(paths)], headers={"User-Agent": BROWSER})
            response = connection.getresponse()
            response.read()
            done += 1
            redirected += response.status == 302
            n += 1
    except (OSError, http.client.HTTPException):
        pass  # the server was killed
    results.put((done, redirected))


def start_redis(core: int) -> tuple[subprocess.Popen | None, str]:
    """A redis-server of our own (the burst memory's short-lived keys), or none if not installed."""
    import shutil

    if not shutil.which("redis-server"):
        return None, ""
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", str(core), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def start_web(database_url: str, base_url: str, port: int, core: int, threads: int, redis_url: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=database_url, SECRET_KEYS=KEYS[0], BASE_URL=base_url, LOG_LEVEL="WARNING",
               REDIS_URL=redis_url)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    process = subprocess.Popen(
        ["taskset", "-c", str(core), gunicorn, "--workers", "1", "--worker-class", "gthread", "--threads", str(threads),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "newsletter.web:create_app()"],
        env=env, cwd=ROOT, start_new_session=True)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the web app did not start")


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load(port: int, paths: list[str], seconds: float, clients: int, core: int) -> tuple[int, int]:
    results = multiprocessing.Queue()
    share = [paths[i::clients] for i in range(clients)]
    procs = [multiprocessing.Process(target=client, args=(port, share[i], seconds, core, results)) for i in range(clients)]
    for p in procs:
        p.start()
    totals = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def counted(database_url: str) -> tuple[int, int]:
    with engine_for(database_url).connect() as conn:
        total = conn.execute(sqlalchemy.text("SELECT coalesce(sum(human + machine + unsure), 0) FROM click_counts")).scalar()
        writes = conn.execute(sqlalchemy.text(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
            "WHERE relname IN ('click_counts', 'click_messages')")).scalar()
    return int(total), int(writes)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="gunicorn gthread threads of the one worker")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[0], cores[-1]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    database_url, drop = fresh_schema(args.postgres)
    try:
        paths = prepare(database_url, base_url)
        print(f"{len(paths)} click paths over 5,000 messages; web app on core {server_core}, "
              f"{args.clients} clients on core {client_core}")
        in_process(database_url, base_url, paths)
        redis_server, redis_url = start_redis(client_core)
        print(f"burst memory: {'shared through ' + redis_url if redis_url else 'the web process (no redis-server)'}")
        web = start_web(database_url, base_url, port, server_core, args.threads, redis_url)
        try:
            [worker] = worker_pids(web.pid)
            load(port, paths[:2000], 2, args.clients, client_core)  # warm up
            time.sleep(1.5)
            before_total, before_writes = counted(database_url)
            cpu = cpu_seconds(worker)
            start = time.monotonic()
            done, redirected = load(port, paths, args.seconds, args.clients, client_core)
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(worker) - cpu
            time.sleep(2.5)  # the counter writes four times a second
            total, writes = counted(database_url)
            total -= before_total
            writes -= before_writes
            print(f"redirects        {done / elapsed:8,.0f} requests/s   ({done:,} in {elapsed:.1f} s, {redirected:,} answered 302)")
            print(f"web worker CPU   {1e6 * cpu / done:8,.0f} µs/request  ({done / cpu:,.0f} requests per CPU second)")
            print(f"counted          {total:8,} clicks in the database ({'all' if total == done else 'NOT all'} of them), "
                  f"{writes:,} rows added or updated (counts per link and hour, and per message), four times a second")
            if total != done:
                raise SystemExit("clicks answered were not all counted")

            before_total, _ = counted(database_url)
            results = multiprocessing.Queue()
            share = [paths[i::args.clients] for i in range(args.clients)]
            procs = [multiprocessing.Process(target=client, args=(port, share[i], 6, client_core, results))
                     for i in range(args.clients)]
            for p in procs:
                p.start()
            time.sleep(3)
            os.killpg(web.pid, signal.SIGKILL)
            answered = sum(results.get()[0] for _ in procs)
            for p in procs:
                p.join()
            total, _ = counted(database_url)
            lost = answered - (total - before_total)
            rate = answered / 3
            print(f"SIGKILL          {answered:,} answered in 3 s, {total - before_total:,} counted: "
                  f"{lost:,} lost, {lost / rate:.2f} s of clicks")
        finally:
            if web.poll() is None:
                os.killpg(web.pid, signal.SIGKILL)
            web.wait()
            if redis_server is not None:
                redis_server.terminate()
                redis_server.wait()
    finally:
        drop()


if __name__ == "__main__":
    main()
