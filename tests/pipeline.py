"""The whole pipeline as production runs it, for end-to-end tests.

Real Celery worker and beat processes (started the way the Procfile starts
them), a real broker, a real database and a real SMTP server on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from newsletter.config import settings_from
from newsletter.store.db import session_scope

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"


class Pipeline:
    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, smtp, **overrides):
        self.tmp_path = tmp_path
        self.smtp = smtp
        self.env = dict(os.environ)
        for key in ("REDIS_URL", "DATABASE_URL", "TRANSPORT"):
            self.env.pop(key, None)
        self.env.update(
            {
                "NEWSLETTER_DATA_DIR": str(tmp_path / "var"),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "TRANSPORT": "smtp",
                "SMTP_HOST": smtp.host,
                "SMTP_PORT": str(smtp.port),
                "SMTP_SECURITY": "none",
                "SMTP_CONNECTIONS": "2",
                "SMTP_TIMEOUT": "5",
                "SECRET_KEYS": "end-to-end-secret",
                "BASE_URL": "https://newsletter.example.org",
                "BEAT_INTERVAL_SECONDS": "0.5",
                "CLAIM_TIMEOUT_SECONDS": "4",
                "CLAIM_LEASE_SECONDS": "3",
                "RETRY_BASE_DELAY_SECONDS": "0.3",
                # A throttle (421, 429) that names no wait pauses the account this long.
                "RATE_LIMIT_THROTTLE_SECONDS": "2",
                "ERROR_BUDGET_RATIO": "2",
                "BATCH_SIZE": "20",
            }
        )
        self.env.update({k: str(v) for k, v in overrides.items()})
        self.settings = settings_from(self.env)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)

    # --- processes --------------------------------------------------------------

    def start(self, name: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        command = [*prefix, sys.executable, "-m", "celery", "-A", "workers.celery", *args]
        process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker", concurrency: int = 2, host: str = "",
                     queues: str = "send,control") -> subprocess.Popen:
        """A worker; with ``host``, on a "host" of that name (its own UTS
        namespace, so ``socket.gethostname()`` says so: needs root)."""
        prefix = ("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host) if host else ()
        return self.start(
            name, "worker", "--queues", queues, "--concurrency", str(concurrency),
            "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
            "--hostname", f"{name}@%h", prefix=prefix,
        )

    def start_beat(self, name: str = "beat") -> subprocess.Popen:
        schedule = self.tmp_path / f"{name}-schedule"
        return self.start(name, "beat", "--loglevel", "INFO", "--schedule", str(schedule))

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children: no chance to clean up."""
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes):
            try:
                self.processes[name].wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(name)
        self.processes.clear()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*.log"))

    # --- the world ------------------------------------------------------------------

    def prepare(self, subscribers: int, *, delay: float = 1.0, unsubscribed=(), suppressed=()) -> int:
        """Store the sample issue, a list of subscribers, and schedule a send."""
        from newsletter.sending import scheduling
        from newsletter.authoring.publishing import checked_render
        from newsletter.audience.suppressions import add_suppression
        from newsletter.store.issues import store_issue
        from newsletter.store.migrate import upgrade
        from newsletter.store.models import utcnow
        from newsletter.audience.subscribers import add_subscriber, create_list, get_list, unsubscribe

        upgrade(self.settings.effective_database_url)
        rendered, _ = checked_render(SAMPLE)
        slug = rendered.issue.publication.slug
        with session_scope(self.settings) as session:
            issue = store_issue(session, rendered)
            create_list(session, slug, "everyone", "Everyone")
            for n in range(subscribers):
                add_subscriber(session, self.address(n), name=f"Reader {n}", lists=["everyone"], publication_slug=slug)
            for n in unsubscribed:
                unsubscribe(session, self.address(n))
            for n in suppressed:
                add_suppression(session, self.address(n), "complaint", "test")
            send = scheduling.schedule_send(
                session, issue, get_list(session, slug, "everyone"), utcnow() + timedelta(seconds=delay),
                batch_size=self.settings.batch_size,
            )
            return send.id

    @staticmethod
    def address(n: int) -> str:
        return f"reader{n:05d}@example.com"

    def progress(self, send_id: int):
        from newsletter.sending.lifecycle import progress

        with session_scope(self.settings) as session:
            return progress(session, send_id)

    def in_flight(self, send_id: int) -> int:
        """Rows a worker has claimed or is sending now."""
        counts = self.progress(send_id).counts
        return counts.get("claimed", 0) + counts.get("sending", 0)

    def wait_for(self, predicate, timeout: float = 90, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited with {process.returncode}\n{self.log_text()}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.log_text()}")

    def wait_finished(self, send_id: int, timeout: float = 120):
        return self.wait_for(lambda: (p := self.progress(send_id)).state == "finished" and p, timeout, f"send {send_id} to finish")

    def with_settings(self, **changes):
        self.settings = replace(self.settings, **changes)
        return self


def newsletter(pipeline, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The command as an operator types it, in its own process."""
    result = subprocess.run([sys.executable, "-m", "newsletter", *args], env=pipeline.env,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def status(pipeline) -> dict:
    return json.loads(newsletter(pipeline, "ops", "status", "--json").stdout)
