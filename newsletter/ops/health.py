"""Health checks: is the database there, do workers answer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from newsletter.config import Settings
from newsletter.ops.broker import broker_view, queue_names
from newsletter.ops.heartbeats import worker_statuses
from newsletter.store.db import session_scope
from newsletter.wording import counted


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str


def database_reachable(settings: Settings) -> Health:
    try:
        with session_scope(settings) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return Health(False, f"database unreachable: {str(exc).splitlines()[0]}")
    return Health(True, "database ok")


def database_health(settings: Settings) -> Health:
    """The database and the broker answer."""
    database = database_reachable(settings)
    if not database.ok:
        return database
    try:
        broker_view(settings).queue_stats(queue_names())
    except Exception as exc:  # noqa: BLE001
        return Health(False, f"broker unreachable: {str(exc).splitlines()[0]}")
    return Health(True, "database ok, broker ok")


def worker_health(settings: Settings, queues: tuple[str, ...] = (), node: str | None = None) -> Health:
    """A running worker (fresh heartbeat) for each queue, or the named worker is running."""
    try:
        with session_scope(settings) as session:
            workers = worker_statuses(session, settings)
    except Exception as exc:  # noqa: BLE001
        return Health(False, f"database unreachable: {str(exc).splitlines()[0]}")
    running = [w for w in workers if w.alive]
    if node:
        if any(w.node == node for w in running):
            return Health(True, f"worker {node} is running")
        return Health(False, f"worker {node} has not sent a heartbeat recently")
    missing = [q for q in (queues or queue_names()) if not any(q in w.queues for w in running)]
    if missing:
        return Health(False, f"no running worker consumes: {', '.join(missing)}")
    return Health(True, f"{counted(len(running), 'worker')} running")
