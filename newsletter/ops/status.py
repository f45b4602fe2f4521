"""One snapshot of everything ops shows: queues, workers, sends, problems.

The CLI, ``--json``, ``/metrics`` and the dashboard all render this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.ops.broker import BrokerView, QueueStats, broker_view, queue_names
from newsletter.ops.heartbeats import WorkerStatus, worker_statuses
from newsletter.ops.problems import CRITICAL, OpsProblem, find_problems
from newsletter.ops.sends import ScheduledSend, SendStatus, scheduled_sends, send_statuses
from newsletter.store import clock


@dataclass
class Status:
    generated_at: datetime
    queues: list[QueueStats]
    workers: list[WorkerStatus]
    sends: list[SendStatus]
    scheduled: list[ScheduledSend]
    problems: list[OpsProblem]

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self)) | {"sends": [send_dict(s) for s in self.sends]}


def send_dict(send: SendStatus) -> dict:
    return _plain(dataclasses.asdict(send)) | {
        "bounce_rate": send.bounce_rate, "complaint_rate": send.complaint_rate,
    }


def _plain(value):
    """JSON-ready: datetimes as ISO 8601 UTC, tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def collect_status(
    session: Session, settings: Settings, broker: BrokerView | None = None, now: datetime | None = None
) -> Status:
    now = clock.read(session, now)  # the database's clock, as the leases it judges
    queues, broker_problem = _queue_stats(settings, broker)
    workers = worker_statuses(session, settings, now)
    sends = send_statuses(session, now, throttled_after=timedelta(seconds=settings.throttled_send_warning_seconds))
    problems = find_problems(settings, queues, workers, sends, now)
    if broker_problem:
        problems.insert(0, broker_problem)
    return Status(now, queues, workers, sends, scheduled_sends(session), problems)


def _queue_stats(settings: Settings, broker: BrokerView | None) -> tuple[list[QueueStats], OpsProblem | None]:
    try:
        broker = broker or broker_view(settings)
        return broker.queue_stats(queue_names()), None
    except Exception as exc:  # noqa: BLE001 - an unreachable broker is a finding, not a crash
        return [], OpsProblem(
            "broker_unreachable", CRITICAL, "broker", f"cannot read the queues: {exc}",
            "check REDIS_URL and that Redis is running",
        )
