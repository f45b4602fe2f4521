"""Thin tasks: ids in, the newsletter library does the work."""

from __future__ import annotations

import logging

from celery.signals import worker_process_shutdown

from newsletter import sending
from newsletter.config import get_settings
from newsletter.ratelimit import make_rate_limiter
from newsletter.store.db import session_scope
from newsletter.transports import make_transport
from workers.celery import app

log = logging.getLogger(__name__)

_deliverer: sending.Deliverer | None = None


def deliverer() -> sending.Deliverer:
    """One transport (its connections reused) and one limiter per worker process."""
    global _deliverer
    if _deliverer is None:
        settings = get_settings()
        _deliverer = sending.Deliverer(
            settings,
            make_transport(settings),
            make_rate_limiter(settings, settings.transport),
        )
    return _deliverer


@worker_process_shutdown.connect
def _close_transport(**_kwargs):
    if _deliverer is not None:
        _deliverer.transport.close()


@app.task(ignore_result=True)
def tick() -> None:
    """Start due sends, re-enqueue lost or retry-due batches, finish sends."""
    with session_scope() as session:
        batch_ids = sending.tick(session, get_settings())
    for batch_id in batch_ids:
        deliver_batch.delay(batch_id)


@app.task(ignore_result=True)
def deliver_batch(batch_id: int) -> None:
    with session_scope() as session:
        report = deliverer().deliver_batch(session, batch_id)
    log.info(
        "batch %s: %s sent, %s failed, %s retry, %s skipped%s",
        batch_id, report.sent, report.failed, report.retry, report.skipped,
        f", stopped: {report.stopped}" if report.stopped else "",
        extra={"batch_id": batch_id},
    )
