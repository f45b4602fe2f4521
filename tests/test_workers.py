"""The Celery app is configured for at-least-once delivery and the Procfile matches it."""

import re
import shlex
from pathlib import Path

from newsletter.config import settings_from
from workers import queues
from workers.celery import make_app

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, list[str]]:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            lines[name.strip()] = shlex.split(command)
    return lines


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_procfile_workers_consume_exactly_the_queues_the_app_routes_to():
    consumed = set()
    for name, argv in procfile().items():
        if "worker" in argv:
            consumed |= set(option(argv, "--queues").split(","))
    app = make_app(settings_from({}))
    routed = {route["queue"] for route in app.conf.task_routes.values()}
    assert consumed == set(queues.ALL) == routed
    assert {q.name for q in app.conf.task_queues} == set(queues.ALL)


def test_procfile_runs_beat_once():
    beats = [argv for argv in procfile().values() if "beat" in argv]
    assert len(beats) == 1


def test_sending_tasks_are_acknowledged_late_and_never_prefetched(tmp_path):
    app = make_app(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path)}))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    send_worker = next(argv for argv in procfile().values() if "worker" in argv and "send" in option(argv, "--queues"))
    assert option(send_worker, "--prefetch-multiplier") == "1"


def test_without_redis_the_broker_is_embedded_in_the_data_folder(tmp_path):
    app = make_app(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path)}))
    assert app.conf.broker_url.startswith("filesystem://")
    assert Path(app.conf.broker_transport_options["data_folder_in"]).is_relative_to(tmp_path)


def test_with_redis_the_broker_is_redis(tmp_path):
    app = make_app(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:6379/0"}))
    assert re.match(r"redis://", app.conf.broker_url)
