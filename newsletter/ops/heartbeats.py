"""Workers say what they are doing; ops reads it back.

Each worker process writes one row (by its Celery node name) every
``worker_heartbeat_seconds``: its queues, concurrency and tasks in progress.
A worker three beats late, or whose process is gone from this host, is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.sending.records import BatchReport
from newsletter.store import clock
from newsletter.store.db import session_scope
from newsletter.store.models import BatchRun, UTCDateTime, WorkerHeartbeat
from newsletter.store.upsert import dialect_insert

log = logging.getLogger(__name__)

MISSED_BEATS_BEFORE_GONE = 3
SHOWN_AFTER_STOPPING = timedelta(hours=1)
KEPT_AFTER_STOPPING = timedelta(days=1)


@dataclass(frozen=True)
class WorkerStatus:
    node: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    active_tasks: int
    state: str  # running | stopped | gone
    started_at: datetime
    last_seen_at: datetime
    seconds_since_seen: float

    @property
    def alive(self) -> bool:
        return self.state == "running"


def record_heartbeat(
    session: Session, *, node: str, queues: tuple[str, ...], concurrency: int, active_tasks: int,
    now: datetime | None = None,
) -> None:
    """Upsert this worker's row; called from the worker's heartbeat thread.
    Its times are the database's, the clock they are judged by."""
    now = clock.read(session, now)
    values = {
        "node": node, "hostname": socket.gethostname(), "pid": os.getpid(), "queues": ",".join(queues),
        "concurrency": concurrency, "active_tasks": active_tasks, "state": "running", "last_seen_at": now,
    }
    statement = dialect_insert(session, WorkerHeartbeat).values(started_at=now, **values)
    # A restarted worker keeps its node name: its row is taken over.
    restarted = statement.excluded.pid != WorkerHeartbeat.pid
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["node"],
            set_={**values, "started_at": case((restarted, literal(now, UTCDateTime())), else_=WorkerHeartbeat.started_at)},
        )
    )
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen_at < now - KEPT_AFTER_STOPPING))


def record_stopped(session: Session, node: str) -> None:
    """A clean shutdown: the worker is not gone, it was stopped."""
    session.execute(
        update(WorkerHeartbeat).where(WorkerHeartbeat.node == node, WorkerHeartbeat.pid == os.getpid())
        .values(state="stopped", active_tasks=0, last_seen_at=clock.now_sql(session))
    )


def worker_statuses(session: Session, settings: Settings, now: datetime | None = None) -> list[WorkerStatus]:
    """Running workers, and those stopped or gone within the last hour (by the database's clock)."""
    now = clock.read(session, now)
    rows = session.scalars(
        select(WorkerHeartbeat)
        .where(WorkerHeartbeat.last_seen_at >= now - SHOWN_AFTER_STOPPING)
        .order_by(WorkerHeartbeat.node)
    ).all()
    return [_status(row, settings, now) for row in rows]


def _status(row: WorkerHeartbeat, settings: Settings, now: datetime) -> WorkerStatus:
    since = (now - row.last_seen_at).total_seconds()
    state = row.state
    if state == "running" and (
        since > settings.worker_heartbeat_seconds * MISSED_BEATS_BEFORE_GONE or _process_is_gone(row.hostname, row.pid)
    ):
        state = "gone"
    return WorkerStatus(
        node=row.node, hostname=row.hostname, pid=row.pid, queues=tuple(q for q in row.queues.split(",") if q),
        concurrency=row.concurrency, active_tasks=row.active_tasks if state == "running" else 0, state=state,
        started_at=row.started_at, last_seen_at=row.last_seen_at, seconds_since_seen=max(0.0, since),
    )


def _process_is_gone(hostname: str, pid: int) -> bool:
    """On this host we can tell at once; elsewhere only the heartbeat's age tells."""
    if hostname != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def record_batch_run(session: Session, report: BatchReport, *, send_id: int, worker: str, seconds: float) -> None:
    """Keep how long a batch task took (``seconds``, by the worker's monotonic
    clock) and what it did, for the batch duration metrics. Its times are the
    database's: it finished now, and started ``seconds`` before."""
    finished_at = clock.read(session)
    session.add(
        BatchRun(
            batch_id=report.batch_id, send_id=send_id, worker=worker,
            started_at=finished_at - timedelta(seconds=seconds), finished_at=finished_at, duration_seconds=seconds,
            sent=report.sent, failed=report.failed + report.unsendable + report.expired, retry=report.retry,
            skipped=report.skipped,
            stopped=(report.stopped or "")[:40],
        )
    )


class HeartbeatThread(threading.Thread):
    """Writes a worker's heartbeat every ``worker_heartbeat_seconds``.

    Started by workers/ in the worker's main process; knows nothing of Celery:
    it is told the node name, queues and concurrency, and asks
    ``active_tasks()`` how many tasks are in progress.
    """

    def __init__(self, settings: Settings, *, node: str, queues: tuple[str, ...], concurrency: int,
                 active_tasks: Callable[[], int]):
        super().__init__(name="newsletter-heartbeat", daemon=True)
        self.settings = settings
        self.node, self.queues, self.concurrency = node, queues, concurrency
        self.active_tasks = active_tasks
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.beat()
            self._stopping.wait(self.settings.worker_heartbeat_seconds)

    def beat(self) -> None:
        try:
            with session_scope(self.settings) as session:
                record_heartbeat(session, node=self.node, queues=self.queues, concurrency=self.concurrency,
                                 active_tasks=self.active_tasks())
        except Exception:  # noqa: BLE001 - a missed beat must not stop the worker
            log.warning("could not write the worker heartbeat", exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=self.settings.worker_heartbeat_seconds + 5)
        try:
            with session_scope(self.settings) as session:
                record_stopped(session, self.node)
        except Exception:  # noqa: BLE001
            log.warning("could not record the worker as stopped", exc_info=True)
