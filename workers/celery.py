"""The Celery app.

With REDIS_URL set, Redis is the broker. Without it, an embedded broker (kombu's
filesystem transport in the data folder) lets the same tasks run with no server:
the demo and a single-machine install use it.

Sending tasks are acknowledged late and rejected when their worker is lost, so
a crash hands the batch to another worker; the ledger makes that safe. Results
are not kept: the database is the record of what happened.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from celery import Celery, signals
from celery.beat import PersistentScheduler
from kombu import Queue

from newsletter.config import ConfigError, Settings, get_settings, make_folder
from newsletter.logs import configure_logging
from newsletter.ops.broker import PUBLISHED_AT_HEADER
from newsletter.ops.heartbeats import HeartbeatThread
from newsletter.store.db import get_engine
from newsletter.ops import queues


def broker_options(settings: Settings) -> tuple[str, dict]:
    if settings.redis_url:
        # A batch takes seconds; an unacknowledged one is handed out again
        # after this long (the ledger turns a second delivery into a no-op).
        return settings.redis_url, {"visibility_timeout": settings.claim_timeout_seconds * 2}
    folder = settings.data_dir / "broker"
    for sub in ("queue", "processed", "control"):
        make_folder(folder / sub, "NEWSLETTER_DATA_DIR (or REDIS_URL, for a Redis broker)")
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    broker_url, transport_options = broker_options(settings)
    app = Celery("newsletter", broker=broker_url, include=["workers.tasks"])
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queues.SEND,
        task_queues=[Queue(name) for name in queues.ALL],
        task_routes={
            "workers.tasks.tick": {"queue": queues.CONTROL},
            "workers.tasks.purge_event_payloads": {"queue": queues.CONTROL},
            "workers.tasks.purge_unconfirmed_signups": {"queue": queues.CONTROL},
            "workers.tasks.deliver_batch": {"queue": queues.SEND},
            "workers.tasks.start_imports": {"queue": queues.CONTROL},
            # Bulk work beside the batches: the control worker keeps ticking meanwhile.
            "workers.tasks.run_import": {"queue": queues.SEND},
        },
        beat_schedule={
            "tick": {
                "task": "workers.tasks.tick",
                "schedule": settings.beat_interval_seconds,
                # A tick nobody ran in time is worthless: the next one comes.
                "options": {"expires": max(settings.beat_interval_seconds * 3, 10)},
            },
            "start-imports": {
                "task": "workers.tasks.start_imports",
                "schedule": settings.beat_interval_seconds,
                "options": {"expires": max(settings.beat_interval_seconds * 3, 10)},
            },
            "purge-event-payloads": {
                "task": "workers.tasks.purge_event_payloads",
                "schedule": 6 * 3600,  # retention is counted in days; a few runs a day keep it tight
                "options": {"expires": 3600},
            },
            "purge-unconfirmed-signups": {
                "task": "workers.tasks.purge_unconfirmed_signups",
                "schedule": 6 * 3600,
                "options": {"expires": 3600},
            },
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        beat_scheduler="workers.celery:BeatScheduler",
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


class BeatScheduler(PersistentScheduler):
    """Celery's file-backed schedule, in a data folder beat creates itself."""

    def setup_schedule(self):
        try:
            make_folder(Path(self.schedule_filename).parent, "NEWSLETTER_DATA_DIR")
        except ConfigError as exc:
            sys.exit(f"error: beat's schedule file: {exc}")
        super().setup_schedule()


try:
    app = make_app()
except ConfigError as exc:
    # Every process loads this module first: a setting it cannot use is a
    # message saying which one, not a traceback.
    sys.exit(f"error: {exc}")


# --- what ops sees: logs, message age, worker heartbeats (newsletter.ops) ------------


@signals.setup_logging.connect
def _configure_logging(**_kwargs):
    # Replaces Celery's own setup: LOG_FORMAT and LOG_LEVEL decide.
    configure_logging(get_settings())


@signals.before_task_publish.connect
def _stamp_published_at(headers=None, **_kwargs):
    # Lets `newsletter ops status` tell how long the oldest message has waited.
    if headers is not None:
        headers.setdefault(PUBLISHED_AT_HEADER, time.time())


_heartbeat: HeartbeatThread | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender, **_kwargs):
    global _heartbeat
    from celery.worker import state

    _heartbeat = HeartbeatThread(
        get_settings(),
        node=sender.hostname,
        queues=tuple(q.name for q in sender.task_consumer.queues),
        concurrency=sender.controller.concurrency,
        active_tasks=lambda: len(state.active_requests),
    )
    _heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_kwargs):
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.worker_process_init.connect
def _own_database_connections(**_kwargs):
    # A pool process forked after the heartbeat connected must not share its
    # parent's connections.
    get_engine().dispose(close=False)
