"""Queue depth over time: sampled by the beat tick, charted by the dashboard."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.ops.broker import broker_view, queue_names
from newsletter.store.models import QueueSample, utcnow

log = logging.getLogger(__name__)

SAMPLE_EVERY = timedelta(minutes=1)
KEPT_FOR = timedelta(days=1)


def record_queue_depths(session: Session, settings: Settings, now: datetime | None = None, broker=None) -> bool:
    """Sample every queue's depth unless the last sample is under a minute old.

    Returns whether a sample was taken. A broker that cannot be read is logged
    and skipped: sampling must never stop the tick that starts sends.
    """
    now = now or utcnow()
    last = session.scalar(select(func.max(QueueSample.at)))
    if last is not None and now - last < SAMPLE_EVERY:
        return False
    try:
        stats = (broker or broker_view(settings)).queue_stats(queue_names())
    except Exception as exc:  # noqa: BLE001 - any broker trouble only costs a sample
        log.warning("queue depths not sampled: %s", exc)
        return False
    depths = {q.name: q.depth for q in stats}
    session.add(QueueSample(at=now, depth=sum(depths.values()), depths=depths))
    session.execute(delete(QueueSample).where(QueueSample.at < now - KEPT_FOR))
    return True
