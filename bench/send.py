"""End to end: a scheduled issue through beat, Celery workers and SMTP, against Postfix's smtp-sink.

    python bench/send.py [--subscribers 100000] [--small 10000] [--skip-delay]

Sets up everything it needs and stops what it started: Postfix's smtp-sink
(installed from the Debian package when missing) on a free loopback port, its
own redis-server, a fresh PostgreSQL schema, the sample issue and made-up
subscribers imported from a CSV. The Celery workers and beat run as the
Procfile starts them. Each run schedules a send and measures from the send's
start (``sends.started_at``) to the last message the server accepted (the
latest ``deliveries.sent_at``), then checks that the ledger has every
recipient sent exactly once and that the sink counted as many messages.

Runs: smtp-source (Postfix's load generator, same message size, reused
connections) as the limit of this machine; the pipeline on loopback for the
small and the full list; the full list again with the server 20 ms away
through bench/delay_proxy.py, and the small list there with
SMTP_CHUNKING=false and with SMTP_PIPELINING=false, for what streaming and
pipelining buy. Far away, the server is a throwaway Postfix smtpd in front of
the sink (tests/postfix_server.py: it offers CHUNKING, smtp-sink does not)
when this runs as root, smtp-sink alone otherwise or with --sink-only. Each
prints messages per second, CPU milliseconds per message of the sending
workers (and the kernel's part of it), each worker process's peak memory, and
the CPU per message of every other process taking part (Postfix, the sink, the
proxy, PostgreSQL, Redis). --scale N ... sends the full list again on loopback
with N send worker processes; --profile DIR samples the send workers with py-spy.

--dkim rsa|ed25519|both signs every message of every run with keys made for
the run (RSA-2048, Ed25519, or one of each, each adding its own
DKIM-Signature): a single key as the environment's DKIM_PRIVATE_KEY_PATH, two
as the publication's ``sending.dkim`` keys. The first line says which.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/, first: bench scripts are named like the libraries they measure.
sys.path[0] = str(ROOT)

import sqlalchemy  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from newsletter.config import settings_from  # noqa: E402
from newsletter.store.db import engine_for, make_engine, session_scope  # noqa: E402
from tests import postfix_server  # noqa: E402  (a throwaway Postfix smtpd, which offers CHUNKING)

SAMPLE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"
DEFAULT_POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SENDER = "news@example.org"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- tools and services ------------------------------------------------------------


def postfix_tools() -> tuple[str, str]:
    """Paths of smtp-sink and smtp-source, installing Postfix's package if need be."""
    found = [shutil.which(name) or f"/usr/sbin/{name}" for name in ("smtp-sink", "smtp-source")]
    if all(os.access(path, os.X_OK) for path in found):
        return found[0], found[1]
    print("installing Postfix's smtp-sink and smtp-source (Debian package postfix)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["debconf-set-selections"], check=True,
                       input=b"postfix postfix/main_mailer_type select No configuration\n")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot install postfix ({exc}): install the Debian package postfix as root, "
                         "choosing 'No configuration', then run this again") from None
    # "No configuration" leaves no daemon running; stop one should a package script have started it.
    subprocess.run(["postfix", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return "/usr/sbin/smtp-sink", "/usr/sbin/smtp-source"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def start(stack: ExitStack, command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A process in its own group, stopped (with its children) when ``stack`` closes."""
    out = log.open("ab")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                               start_new_session=True)
    stack.callback(stop, process)
    stack.callback(out.close)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Sink:
    """smtp-sink on a free port; its running counter tells how many messages it took."""

    def __init__(self, stack: ExitStack, binary: str, folder: Path):
        self.port = free_port()
        self.log = folder / "smtp-sink.log"
        self.process = start(stack, [binary, "-u", "nobody", "-c", "-m", "1024", f"127.0.0.1:{self.port}", "1024"], self.log)
        wait_for_port(self.port)

    def messages(self) -> int:
        counts = re.findall(rb"mesg=(\d+)", self.log.read_bytes()[-4096:])
        return int(counts[-1]) if counts else 0


def start_redis(stack: ExitStack, folder: Path) -> tuple[str, int]:
    """The URL of a redis-server of our own, and its pid."""
    port = free_port()
    process = start(stack, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(folder)], folder / "redis.log")
    wait_for_port(port)
    return f"redis://127.0.0.1:{port}/0", process.pid


def fresh_postgres_schema(stack: ExitStack, server_url: str) -> str:
    """A URL whose connections see a new, empty schema, dropped when ``stack`` closes.

    Its connections carry the schema's name as their application name, which finds this
    run's PostgreSQL backends (``postgres_backends``), whose CPU is counted apart.
    """
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in server_url else "?"
    url = f"{server_url}{sep}options=-csearch_path%3D{schema}&application_name={schema}"

    def drop() -> None:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    stack.callback(drop)
    return url


# --- the world: an issue and its subscribers ------------------------------------------


def write_subscribers(path: Path, count: int, small: int) -> None:
    """reader000001@example.com ...; the first ``small`` are also on the list "sample"."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "lists"])
        for n in range(1, count + 1):
            writer.writerow([f"reader{n:06d}@example.com", f"Reader {n}", "everyone;sample" if n <= small else "everyone"])


def dkim_keys(kind: str | None, folder: Path) -> tuple[dict[str, str], list[Path]]:
    """Keys made for this run: the environment that signs with one, or the key files for the publication to name."""
    if not kind:
        return {}, []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    made = {"rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate}
    paths = []
    for name in ("rsa", "ed25519") if kind == "both" else (kind,):
        path = folder / f"dkim-{name}.pem"
        path.write_bytes(made[name]().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        paths.append(path)
    if len(paths) == 1:
        return {"DKIM_PRIVATE_KEY_PATH": str(paths[0]), "DKIM_SELECTOR": "bench", "DKIM_DOMAIN": "example.org"}, []
    return {}, paths


def sample_issue(folder: Path, key_files: list[Path]) -> Path:
    """The sample issue, its publication naming ``key_files`` as its DKIM keys when there are any."""
    if not key_files:
        return SAMPLE
    publication = folder / "publication"
    shutil.copytree(SAMPLE.parent.parent, publication, dirs_exist_ok=True)
    keys = "".join(f"    - {{selector: bench{n}, domain: example.org, key_file: {path}}}\n"
                   for n, path in enumerate(key_files, start=1))
    yaml = publication / "publication.yaml"
    text = yaml.read_text(encoding="utf-8")
    # Into the sample's own sending block (its other settings, such as clicks, stay), or a new one.
    text, found = re.subn(r"(?m)^sending:\n", lambda m: f"sending:\n  dkim:\n{keys}", text, count=1)
    yaml.write_text(text if found else text + f"sending:\n  dkim:\n{keys}", encoding="utf-8")
    return publication / SAMPLE.relative_to(SAMPLE.parent.parent)


def prepare(settings, folder: Path, count: int, small: int, issue: Path = SAMPLE) -> tuple[str, str]:
    """Store the sample issue and import the subscribers; return the publication's and the issue's slugs."""
    from newsletter.authoring.publishing import checked_render
    from newsletter.store.issues import store_issue
    from newsletter.store.migrate import upgrade
    from newsletter.audience.csv_import import import_csv
    from newsletter.audience.subscribers import create_list

    upgrade(settings.effective_database_url)
    rendered, _ = checked_render(issue)
    slug = rendered.issue.publication.slug
    csv_path = folder / "subscribers.csv"
    write_subscribers(csv_path, count, small)
    started = time.perf_counter()
    with session_scope(settings) as session:
        store_issue(session, rendered)
        create_list(session, slug, "everyone", "Everyone")
        create_list(session, slug, "sample", "The first subscribers")
        report = import_csv(session, csv_path, [], slug)
    if report.added != count:
        raise SystemExit(f"import added {report.added} of {count} subscribers: {report.problems[:3]}")
    print(f"{count:,} subscribers imported in {time.perf_counter() - started:.1f} s")
    return slug, rendered.issue.slug


def schedule(settings, slugs: tuple[str, str], list_slug: str) -> int:
    from newsletter.sending import scheduling
    from newsletter.store.issues import get_issue
    from newsletter.audience.subscribers import get_list

    with session_scope(settings) as session:
        send = scheduling.schedule_send(
            session, get_issue(session, *slugs), get_list(session, slugs[0], list_slug), None,
            batch_size=settings.batch_size, allow_private_links=True,  # the bench's web app is on loopback
            resend=True,  # every run sends the sample issue to its list again, on purpose
        )
        return send.id


def message_size(settings, slugs: tuple[str, str]) -> int:
    """Bytes of one subscriber's complete message, as the workers build it."""
    from types import SimpleNamespace

    from newsletter.sending.claims import Claimed
    from newsletter.sending.send_template import SendTemplate
    from newsletter.store.issues import get_issue
    from newsletter.audience.subscribers import get_list

    with session_scope(settings) as session:
        issue, mailing_list = get_issue(session, *slugs), get_list(session, slugs[0], "everyone")
        send = SimpleNamespace(id=1, issue_id=issue.id, list_id=mailing_list.id,  # no send needs to exist
                               allow_private_links=True)
        row = Claimed(1, 1, "reader000001@example.com", "Reader 1", 0, False)
        return len(SendTemplate.load(session, settings, send).envelope(send, row).message)


# --- processes: CPU and memory from /proc ------------------------------------------------


def group_members(leader: int) -> list[int]:
    """Pids in the process group of ``leader``: a Celery worker and its pool."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and int(fields[2]) == leader:
                members.append(int(entry.name))
    return sorted(members)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields 3 onward; the name may hold spaces


def cpu_seconds(leader: int) -> float:
    """User + system time of the group, with its reaped children."""
    return sum(cpu_split(leader))


def cpu_split(leader: int) -> tuple[float, float]:
    """(user, system) seconds of the group, with its reaped children."""
    user = system = 0
    for pid in group_members(leader):
        fields = _stat_fields(str(pid))
        if fields:
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
            user, system = user + utime + cutime, system + stime + cstime
    return user / CLOCK_TICKS, system / CLOCK_TICKS


class Processes:
    """CPU seconds of the other processes taking part, from /proc (reaped children included)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        self.groups = groups  # name -> function giving the pids now, in the order they are printed

    def cpu(self) -> dict[str, dict[int, float]]:
        return {name: {pid: _cpu_of(pid) for pid in pids()} for name, pids in self.groups.items()}

    @staticmethod
    def spent(before: dict, after: dict) -> dict[str, float]:
        return {name: sum(seconds - before[name].get(pid, 0.0) for pid, seconds in after[name].items())
                for name in after}


def _cpu_of(pid: int) -> float:
    fields = _stat_fields(str(pid))
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS if fields else 0.0


def postgres_backends(settings) -> Callable[[], list[int]]:
    """This run's PostgreSQL backends: those whose application name is the schema's (the server is local)."""
    url = sqlalchemy.engine.make_url(settings.effective_database_url)
    name = url.query["application_name"]

    def pids() -> list[int]:
        with session_scope(settings) as session:
            return list(session.scalars(sqlalchemy.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": name}))

    return pids


def ledger_size(settings) -> str:
    """The ledger's rows and its size on disk (table, TOAST and indexes) after the runs."""
    with session_scope(settings) as session:
        rows = session.scalar(sqlalchemy.text("SELECT count(*) FROM deliveries"))
        table, total = session.execute(sqlalchemy.text(
            "SELECT pg_table_size('deliveries'), pg_total_relation_size('deliveries')")).one()
    return (f"the ledger: {rows:,} rows, {total / 2**20:,.0f} MiB on disk ({table / 2**20:,.0f} MiB the table, "
            f"{(total - table) / 2**20:,.0f} MiB its indexes; {total / max(rows, 1):,.0f} bytes a row)")


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


def peak_memory(leader: int) -> list[tuple[str, int]]:
    """(process, VmHWM in KiB): the group leader first, then its pool."""
    peaks = []
    for pid in group_members(leader):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        peaks.append(("main" if pid == leader else f"pool {len(peaks)}", kib))
    return peaks


# --- the pipeline, as the Procfile runs it ----------------------------------------------


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines) if command}


@dataclass
class RunResult:
    label: str
    messages: int
    seconds: float
    cpu_seconds: float
    other_cpu_seconds: float
    system_seconds: float = 0.0  # of cpu_seconds, in the kernel (sockets, mostly)
    peaks: list[tuple[str, int]] = field(default_factory=list)
    # CPU seconds of every other process taking part: Postfix, the sink, the proxy, PostgreSQL, Redis
    elsewhere_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


class Pipeline:
    """worker_send, worker_control and beat from the Procfile, for one run."""

    def __init__(self, env: dict[str, str], folder: Path):
        self.env = env
        self.folder = folder
        self.settings = settings_from(env)
        self.processes: dict[str, subprocess.Popen] = {}
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, stack: ExitStack) -> None:
        for name, command in procfile().items():
            if name.startswith("worker") or name == "beat":
                log = self.folder / f"{name}.log"
                self.processes[name] = start(stack, ["bash", "-c", f"exec {command}"], log, self.env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        from celery import Celery

        control = Celery(broker=self.settings.redis_url).control
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            answered = {name.split("@")[0] for reply in control.ping(timeout=0.5) for name in reply}
            if {"send", "control"} <= answered:
                return
        raise SystemExit(f"the workers did not answer a ping within {timeout} s; see {self.folder}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with {process.returncode}:\n{log}")

    def leader(self, name: str) -> int:
        return self.processes[name].pid

    def wait_sent(self, send_id: int, expected: int, timeout: float) -> None:
        """Until every ledger row of the send is final; fails when it stops moving."""
        from newsletter.store.models import UNFINISHED_ROW_STATES
        from newsletter.store.models import Delivery

        last, last_change = None, time.monotonic()
        while True:
            self._check_alive()
            with session_scope(self.settings) as session:
                total, open_rows = session.execute(
                    select(func.count(), func.count().filter(Delivery.state.in_(UNFINISHED_ROW_STATES)))
                    .where(Delivery.send_id == send_id)
                ).one()
            if total == expected and open_rows == 0:
                return
            if (total, open_rows) != last:
                last, last_change = (total, open_rows), time.monotonic()
            elif time.monotonic() - last_change > timeout:
                raise SystemExit(f"send {send_id} stopped moving at {open_rows} of {total} open; see {self.folder}")
            time.sleep(0.5)


def ledger_check(settings, send_id: int, expected: int) -> float:
    """Every recipient sent exactly once; returns seconds from the send's start to the last message."""
    from newsletter.store.models import Delivery, Send

    with session_scope(settings) as session:
        states = dict(session.execute(
            select(Delivery.state, func.count()).where(Delivery.send_id == send_id).group_by(Delivery.state)
        ).all())
        distinct, duplicates, last_sent = session.execute(
            select(func.count(func.distinct(Delivery.email)),
                   func.count().filter(Delivery.possible_duplicate.is_(True)), func.max(Delivery.sent_at))
            .where(Delivery.send_id == send_id)
        ).one()
        started = session.scalar(select(Send.started_at).where(Send.id == send_id))
    if states != {"sent": expected} or distinct != expected or duplicates:
        raise SystemExit(f"send {send_id}: ledger {states}, {distinct} distinct addresses, "
                         f"{duplicates} possible duplicates; expected {expected} sent once each")
    return (last_sent - started).total_seconds()


def run_send(stack_env: dict, folder: Path, sink: Sink, slugs: tuple[str, str], list_slug: str, expected: int, label: str,
             elsewhere: Processes, profile: Path | None = None) -> RunResult:
    # Each run has its own folder: logs, and beat's schedule file (a beat
    # stopped by the last run may have left it half written).
    folder = folder / re.sub(r"[^\w]+", "-", label).strip("-")
    stack_env = dict(stack_env, NEWSLETTER_DATA_DIR=str(folder / "var"))
    settings = settings_from(stack_env)
    with ExitStack() as stack:
        pipeline = Pipeline(stack_env, folder)
        pipeline.start(stack)
        send_leader = pipeline.leader("worker_send")
        others = [pipeline.leader(name) for name in pipeline.processes if name != "worker_send"]
        profiler = start_profiler(send_leader, profile, label) if profile else None
        user_before, system_before = cpu_split(send_leader)
        other_before = sum(cpu_seconds(pid) for pid in others)
        sink_before = sink.messages()
        elsewhere_before = elsewhere.cpu()
        send_id = schedule(settings, slugs, list_slug)
        pipeline.wait_sent(send_id, expected, timeout=120)
        if profiler:
            stop_profiler(*profiler)
        elsewhere_cpu = Processes.spent(elsewhere_before, elsewhere.cpu())
        user, system = cpu_split(send_leader)
        cpu, system = user + system - user_before - system_before, system - system_before
        other = sum(cpu_seconds(pid) for pid in others) - other_before
        peaks = peak_memory(send_leader)
    seconds = ledger_check(settings, send_id, expected)
    time.sleep(0.3)  # the sink's counter is written as it goes; let it catch up
    received = sink.messages() - sink_before
    if received < expected:
        raise SystemExit(f"{label}: the sink counted {received} messages of {expected}")
    return RunResult(label, expected, seconds, cpu, other, system, peaks, elsewhere_cpu)


# --- where the time goes: py-spy ---------------------------------------------------------


def start_profiler(leader: int, folder: Path, label: str) -> tuple[subprocess.Popen, Path]:
    """py-spy sampling the send worker and its pool, in a session of its own (its CPU is not counted)."""
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy (a tool, not a dependency of the project)")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (re.sub(r"[^\w]+", "-", label).strip("-") + ".txt")
    process = subprocess.Popen([binary, "record", "--pid", str(leader), "--subprocesses", "--rate", "250", "--gil",
                                "--nonblocking", "--format", "raw", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)  # let it attach before the send starts
    return process, out


def stop_profiler(process: subprocess.Popen, out: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    print(f"  profile (py-spy, collapsed stacks): {out}; summary: python bench/profile_summary.py {out}")


# --- the yardstick ------------------------------------------------------------------------


def smtp_source(binary: str, port: int, messages: int, size: int, sessions: int) -> float:
    """Messages per second Postfix's smtp-source pushes over reused connections."""
    started = time.perf_counter()
    subprocess.run(
        [binary, "-d", "-s", str(sessions), "-l", str(size), "-m", str(messages), "-f", SENDER,
         "-t", "reader@example.com", f"127.0.0.1:{port}"],
        check=True,
    )
    return messages / (time.perf_counter() - started)


# --- reporting ------------------------------------------------------------------------------


def print_result(result: RunResult, source_rate: float) -> None:
    memory = ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in result.peaks)
    print(f"  {result.label:<34} {result.rate:>7,.0f} messages/s  {result.messages:>7,} in {result.seconds:6.1f} s"
          f"   {result.rate / source_rate:4.2f} x smtp-source")
    print(f"  {'':<34} CPU {result.cpu_seconds * 1000 / result.messages:.2f} ms/message in the send workers"
          f" ({result.system_seconds * 1000 / result.messages:.2f} of it in the kernel)"
          f" (+{result.other_cpu_seconds * 1000 / result.messages:.2f} control and beat);"
          f" peak memory (VmHWM) {memory}")
    if result.elsewhere_cpu:
        busy = (result.cpu_seconds + result.other_cpu_seconds + sum(result.elsewhere_cpu.values())) / result.seconds
        spent = ", ".join(f"{name} {seconds * 1000 / result.messages:.2f}" for name, seconds in result.elsewhere_cpu.items())
        print(f"  {'':<34} CPU ms/message elsewhere: {spent};"
              f" all of the run's processes kept {busy:.2f} of {os.cpu_count()} cores busy")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000, help="the full list")
    parser.add_argument("--small", type=int, default=10_000, help="the smaller list, to compare memory")
    parser.add_argument("--skip-delay", action="store_true", help="no run with the server 20 ms away")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="round trip to the server in the delayed run")
    parser.add_argument("--connections", type=int, default=None, help="SMTP_CONNECTIONS on loopback (default: the setting's)")
    parser.add_argument("--delay-connections", type=int, default=10,
                        help="SMTP_CONNECTIONS with the server far away (x the send workers: at most 20 a host)")
    parser.add_argument("--skip-lockstep", action="store_true",
                        help="no run far away with SMTP_PIPELINING=false")
    parser.add_argument("--skip-loopback", action="store_true",
                        help="no loopback runs of the small and the full list (those of --scale still run)")
    parser.add_argument("--compare-batch-size", type=int, default=None,
                        help="far away, the full list again with this BATCH_SIZE")
    parser.add_argument("--sink-only", action="store_true",
                        help="far away, smtp-sink alone even when a Postfix smtpd (CHUNKING) can be started")
    parser.add_argument("--concurrency", type=int, default=None, help="SEND_CONCURRENCY (default: the Procfile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="BATCH_SIZE (default: the setting's)")
    parser.add_argument("--source-messages", type=int, default=20_000)
    parser.add_argument("--scale", type=int, nargs="+", metavar="N",
                        help="also send the full list on loopback with N send worker processes (SEND_CONCURRENCY), "
                             "for each N given, e.g. --scale 1 2 4")
    parser.add_argument("--profile", type=Path,
                        help="sample the send workers with py-spy during each run; collapsed stacks go in this folder")
    parser.add_argument("--dkim", choices=("rsa", "ed25519", "both"),
                        help="sign every message: RSA-2048, Ed25519, or both (keys made for the run)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs of every process)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a PostgreSQL server to use a fresh schema of")
    return parser.parse_args()


def base_env(args, folder: Path, database_url: str, redis_url: str, sink_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TRANSPORT")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "NEWSLETTER_DATA_DIR": str(folder / "var"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TRANSPORT": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(sink_port),
        "SMTP_SECURITY": "none",
        "SECRET_KEYS": "bench-secret-key",
        "BASE_URL": "https://newsletter.example.org",
    })
    for name, value in (("SMTP_CONNECTIONS", args.connections), ("SEND_CONCURRENCY", args.concurrency),
                        ("BATCH_SIZE", args.batch_size)):
        if value is not None:
            env[name] = str(value)
    return env


def main() -> None:
    args = parse_args()
    sink_binary, source_binary = postfix_tools()
    with ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-send-")))
        folder.mkdir(parents=True, exist_ok=True)
        sink = Sink(stack, sink_binary, folder)
        redis_url, redis_pid = start_redis(stack, folder)
        env = base_env(args, folder, fresh_postgres_schema(stack, args.postgres), redis_url, sink.port)
        dkim_env, key_files = dkim_keys(args.dkim, folder)
        env.update(dkim_env)
        settings = settings_from(env)
        # Every run counts the CPU of these too; the far runs add Postfix's and the proxy's.
        elsewhere = Processes({"smtp-sink": lambda: [sink.process.pid],
                               "PostgreSQL": postgres_backends(settings), "Redis": lambda: [redis_pid]})
        slugs = prepare(settings, folder, args.subscribers, args.small, sample_issue(folder, key_files))
        size = message_size(settings, slugs)
        sessions = max(8, settings.smtp_connections * 2)
        source_rate = smtp_source(source_binary, sink.port, args.source_messages, size, sessions)
        print(f"message size {size / 1024:.1f} KiB; {_signed(args.dkim)}; {_machine()}; {_load()}")
        print(f"  {'smtp-source, ' + str(sessions) + ' reused connections':<34} {source_rate:>7,.0f} messages/s")
        runs = [("sample", args.small, f"loopback, {args.small:,} subscribers"),
                ("everyone", args.subscribers, f"loopback, {args.subscribers:,} subscribers")]
        for list_slug, count, label in [] if args.skip_loopback else runs:
            print_result(run_send(env, folder, sink, slugs, list_slug, count, label, elsewhere, args.profile), source_rate)
        for workers in args.scale or []:
            result = run_send(dict(env, SEND_CONCURRENCY=str(workers)), folder, sink, slugs, "everyone", args.subscribers,
                              f"{workers} send worker process(es), {args.subscribers:,}", elsewhere, args.profile)
            print_result(result, source_rate)
        if not args.skip_delay:
            run_delayed(args, env, folder, sink, slugs, source_binary, size, elsewhere)
        print(f"at the end: {_load()}; {ledger_size(settings)}")


def run_delayed(args, env: dict, folder: Path, sink: Sink, slugs: tuple[str, str], source_binary: str, size: int,
                elsewhere: Processes) -> None:
    with ExitStack() as stack:
        server_port, server, chunking = sink.port, "smtp-sink (PIPELINING, no CHUNKING)", False
        groups = {}
        if postfix_server.usable() is None and not args.sink_only:
            # Postfix's smtpd offers CHUNKING (smtp-sink does not) and passes each message to the sink.
            postfix = stack.enter_context(postfix_server.PostfixServer(sink.port))
            server_port, server, chunking = postfix.port, "Postfix smtpd (PIPELINING, CHUNKING) in front of smtp-sink", True
            master = int((postfix.folder / "queue" / "pid" / "master.pid").read_text().split()[0])
            groups["Postfix"] = lambda: [master, *children_of(master)]
        port = free_port()
        proxy = start(stack, [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), str(port),
                              f"127.0.0.1:{server_port}", "--delay-ms", str(args.delay_ms / 2)],
                      folder / "delay-proxy.log")
        groups["smtp-sink"] = elsewhere.groups["smtp-sink"]
        groups["delay proxy"] = lambda: [proxy.pid]
        # Named in this order: Postfix, the sink, the proxy, then PostgreSQL and Redis.
        servers = Processes({**groups, **elsewhere.groups})
        wait_for_port(port)
        print(f"server {args.delay_ms:g} ms away (round trip): {server}; "
              f"the pipeline with SMTP_CONNECTIONS={args.delay_connections}; {_load()}")
        # What the connections buy: the same yardstick at the default number of them.
        default_sessions = settings_from(env).smtp_connections * send_workers(env)
        few = smtp_source(source_binary, port, 1_000, size, default_sessions)
        print(f"  {'smtp-source, ' + str(default_sessions) + ' reused connections':<34} {few:>7,.0f} messages/s")
        far_env = dict(env, SMTP_PORT=str(port), SMTP_CONNECTIONS=str(args.delay_connections))
        sessions = args.delay_connections * send_workers(far_env)
        source_rate = smtp_source(source_binary, port, min(args.source_messages, 10_000), size, sessions)
        print(f"  {'smtp-source, ' + str(sessions) + ' reused connections':<34} {source_rate:>7,.0f} messages/s")
        result = run_send(far_env, folder, sink, slugs, "everyone", args.subscribers,
                          f"{args.delay_ms:g} ms away, {args.subscribers:,} subscribers", servers, args.profile)
        print_result(result, source_rate)
        print(f"  {'':<34} {result.rate / sessions:.1f} messages/s per connection")
        if args.compare_batch_size:
            # Bigger batches: more chunks a batch run, each handed over before the last is answered.
            bigger = run_send(dict(far_env, BATCH_SIZE=str(args.compare_batch_size)), folder, sink, slugs, "everyone",
                              args.subscribers, f"{args.delay_ms:g} ms away, BATCH_SIZE={args.compare_batch_size}",
                              servers, args.profile)
            print_result(bigger, source_rate)
            print(f"  {'':<34} {bigger.rate / sessions:.1f} messages/s per connection;"
                  f" this / the first far run: {bigger.rate / result.rate:.2f} x")
        # What streaming buys: DATA pipelined, then one command at a time (the smaller list: they are slower).
        others = [("SMTP_CHUNKING", "pipelined (DATA)")] if chunking else []
        if not args.skip_lockstep:
            others.append(("SMTP_PIPELINING", "one command at a time"))
        for setting, how in others:
            other = run_send(dict(far_env, **{setting: "false"}), folder, sink, slugs, "sample", args.small,
                             f"{args.delay_ms:g} ms away, {setting}=false", servers, args.profile)
            print_result(other, source_rate)
            print(f"  {'':<34} {other.rate / sessions:.1f} messages/s per connection ({how});"
                  f" the first far run / this: {result.rate / other.rate:.2f} x")


def send_workers(env: dict) -> int:
    return int(env.get("SEND_CONCURRENCY", "2"))  # the Procfile's default


def _load() -> str:
    # The machine may be shared: the figures only compare within one run.
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def _signed(kind: str | None) -> str:
    return {None: "not signed", "rsa": "DKIM: RSA-2048", "ed25519": "DKIM: Ed25519",
            "both": "DKIM: RSA-2048 and Ed25519"}[kind] + (" (relaxed/relaxed)" if kind else "")


def _machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"


if __name__ == "__main__":
    main()
