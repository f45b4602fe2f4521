"""Thin tasks: ids in, the newsletter library does the work."""

from __future__ import annotations

import logging
import os
import time

from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from sqlalchemy import select

from newsletter.sending import delivery, lifecycle
from newsletter.config import get_settings
from newsletter.logs import bind_log_context, reset_log_context
from newsletter.ops.broker import broker_view
from newsletter.ops.heartbeats import record_batch_run
from newsletter.ops.queues import SEND
from newsletter.ops.queue_history import record_queue_depths
from newsletter.sending.heap import keep_freed_memory
from newsletter.store.db import session_scope
from newsletter.store.models import Batch
from workers.celery import app

log = logging.getLogger(__name__)

_deliverer: delivery.Deliverer | None = None
_deliverer_pid = 0


def deliverer() -> delivery.Deliverer:
    """One Deliverer per worker process: a lane (transport, account limiter,
    DKIM keys) per publication, each made on first use, connections reused.

    Made in the process that sends, never inherited through a fork: sockets
    and threads do not survive one, and each process claims rows under a
    name of its own (newsletter/sending/leases.py).
    """
    global _deliverer, _deliverer_pid
    if _deliverer is None or _deliverer_pid != os.getpid():
        keep_freed_memory()  # each chunk's messages reuse the last chunk's memory
        _deliverer = delivery.Deliverer(get_settings())
        _deliverer_pid = os.getpid()
    return _deliverer


@worker_process_shutdown.connect
def _close_transport(**_kwargs):
    if _deliverer is not None and _deliverer_pid == os.getpid():
        _deliverer.close()


@app.task(ignore_result=True)
def tick() -> None:
    """Start due sends, re-enqueue lost or retry-due batches, finish sends."""
    queue_empty = send_queue_is_empty()
    with session_scope() as session:
        batch_ids = lifecycle.tick(session, get_settings(), queue_empty=queue_empty)
    for batch_id in batch_ids:
        deliver_batch.delay(batch_id)
    with session_scope() as session:
        record_queue_depths(session, get_settings())  # for the dashboard's chart


def send_queue_is_empty() -> bool | None:
    """Whether the broker's send queue is empty now; None when it cannot be read
    (then the beat cannot tell a lost batch from one still waiting its turn)."""
    try:
        [stats] = broker_view(get_settings()).queue_stats((SEND,))
    except Exception:  # noqa: BLE001 - the tick goes on; only this judgment waits
        log.warning("could not read the send queue's depth", exc_info=True)
        return None
    return stats.depth == 0


@app.task(ignore_result=True)
def purge_event_payloads() -> None:
    """Forget raw provider payloads and webhook nonces past their retention."""
    from newsletter.feedback.events import purge_old_payloads

    with session_scope() as session:
        purge_old_payloads(session, get_settings())


@app.task(ignore_result=True)
def purge_unconfirmed_signups() -> None:
    """Forget sign-ups never confirmed within their retention."""
    from newsletter.audience.signup import purge_unconfirmed

    with session_scope() as session:
        purge_unconfirmed(session, get_settings())


@app.task(ignore_result=True)
def start_imports() -> None:
    """Hand each console CSV import that waits (or lost its worker) to a worker."""
    from newsletter.console.imports import due_jobs

    with session_scope() as session:
        job_ids = due_jobs(session)
    for job_id in job_ids:
        run_import.delay(job_id)


@app.task(ignore_result=True)
def run_import(job_id: int) -> None:
    """One console CSV import (``newsletter.console.imports.run_job``)."""
    from newsletter.console.imports import run_job

    with session_scope() as session:
        run_job(session, job_id, get_settings())


# Without its database a batch task can neither send nor say it failed: it
# tries again, backing off to every half minute, until the database is back.
# (A task that dies that way has given back what it could; the rest of its
# rows are taken over when its lease lapses.)
@app.task(ignore_result=True, autoretry_for=delivery.DATABASE_AWAY, retry_backoff=True, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def deliver_batch(batch_id: int) -> None:
    started = time.monotonic()
    with session_scope() as session:
        send_id = session.scalar(select(Batch.send_id).where(Batch.id == batch_id))
        # The batch is bound already (_bind_batch_to_logs); its send stays bound
        # until the task's end, so Celery's own "succeeded" line names it too.
        label = bind_log_context(send_id=send_id)
        try:
            report = deliverer().deliver_batch(session, batch_id)
            if send_id is not None:
                record_batch_run(session, report, send_id=send_id, worker=report.holder or deliverer().identity,
                                 seconds=time.monotonic() - started)
            log.info(
                "batch %s: %s sent, %s failed, %s unsendable, %s retry, %s skipped%s",
                batch_id, report.sent, report.failed, report.unsendable, report.retry, report.skipped,
                f", stopped: {report.stopped}" if report.stopped else "",
                extra={"batch_id": batch_id},
            )
        finally:
            if deliver_batch.request.id not in _log_tokens:  # called directly, not run by a worker
                reset_log_context(label)


# Every log line of a batch task, Celery's own included, carries its batch;
# those of the work itself carry its send too. Labelling takes only the id
# the task was given: no database session of its own, so a database that is
# away or out of connections is met (and retried) by the task, not here.
_log_tokens: dict = {}


@task_prerun.connect(sender=deliver_batch)
def _bind_batch_to_logs(task_id=None, args=(), **_kwargs):
    batch_id = args[0] if args else None
    _log_tokens[task_id] = bind_log_context(batch_id=batch_id)


@task_postrun.connect(sender=deliver_batch)
def _unbind_batch_from_logs(task_id=None, **_kwargs):
    token = _log_tokens.pop(task_id, None)
    if token is not None:
        reset_log_context(token)
