"""The Celery app.

With REDIS_URL set, Redis is the broker. Without it, an embedded broker (kombu's
filesystem transport in the data folder) lets the same tasks run with no server:
the demo and a single-machine install use it.

Sending tasks are acknowledged late and rejected when their worker is lost, so
a crash hands the batch to another worker; the ledger makes that safe. Results
are not kept: the database is the record of what happened.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from newsletter.config import Settings, get_settings
from workers import queues


def broker_options(settings: Settings) -> tuple[str, dict]:
    if settings.redis_url:
        # A batch takes seconds; an unacknowledged one is handed out again
        # after this long (the ledger turns a second delivery into a no-op).
        return settings.redis_url, {"visibility_timeout": settings.claim_timeout_seconds * 2}
    folder = settings.data_dir / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
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
            "workers.tasks.deliver_batch": {"queue": queues.SEND},
        },
        beat_schedule={
            "tick": {
                "task": "workers.tasks.tick",
                "schedule": settings.beat_interval_seconds,
                # A tick nobody ran in time is worthless: the next one comes.
                "options": {"expires": max(settings.beat_interval_seconds * 3, 10)},
            }
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


app = make_app()
