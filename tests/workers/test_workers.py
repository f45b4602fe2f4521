"""The Celery app is configured for at-least-once delivery and the Procfile matches it."""

import re
import shlex
from pathlib import Path

import pytest

from newsletter.config import settings_from
from newsletter.ops import queues
from workers.celery import make_app

ROOT = Path(__file__).resolve().parent.parent.parent


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


def _run_in(tmp_path, command: list[str], **env: str):
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # starts processes of its own
def test_beat_creates_its_data_folder_and_schedule_file(tmp_path, redis_url):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "fresh" / "var"
    env = {**os.environ, "NEWSLETTER_DATA_DIR": str(data), "REDIS_URL": redis_url}
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery", "beat"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(data.glob("celerybeat-schedule*")) and time.monotonic() < deadline:
            assert beat.poll() is None, "beat stopped"
            time.sleep(0.2)
        assert list(data.glob("celerybeat-schedule*")), "beat made no schedule file in its data folder"
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)


@pytest.mark.slow  # starts processes of its own
def test_a_data_folder_that_cannot_be_made_names_the_setting_without_a_traceback(tmp_path, redis_url):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    impossible = str(blocker / "var")

    beat = _run_in(tmp_path, ["celery", "-A", "workers.celery", "beat"], NEWSLETTER_DATA_DIR=impossible,
                   REDIS_URL=redis_url)
    assert beat.returncode != 0
    assert "set NEWSLETTER_DATA_DIR" in beat.stderr and "Traceback" not in beat.stderr

    worker = _run_in(tmp_path, ["celery", "-A", "workers.celery", "worker"], NEWSLETTER_DATA_DIR=impossible)
    assert worker.returncode != 0
    assert "set NEWSLETTER_DATA_DIR" in worker.stderr and "Traceback" not in worker.stderr

    cli = _run_in(tmp_path, ["newsletter", "lists", "list"], NEWSLETTER_DATA_DIR=impossible)
    assert cli.returncode == 2
    assert "set NEWSLETTER_DATA_DIR" in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.slow  # starts processes of its own
def test_a_database_that_cannot_be_reached_is_a_message_not_a_traceback(tmp_path):
    from tests.conftest import free_port

    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/newsletter"
    cli = _run_in(tmp_path, ["newsletter", "lists", "list"], DATABASE_URL=unreachable)
    assert cli.returncode == 2
    assert "check DATABASE_URL" in cli.stderr and "Traceback" not in cli.stderr


def test_a_batch_task_labels_its_logs_without_a_database_session(monkeypatch, caplog):
    """Labelling a task's log lines must not need a connection: when the
    database is away or out of connections, the task meets it (and retries),
    the label does not fail first."""
    import logging
    import socket

    from newsletter.config import get_settings
    from newsletter.logs import ContextFilter
    from workers import tasks

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{closed}/newsletter")
    get_settings.cache_clear()
    try:
        tasks._bind_batch_to_logs(task_id="labelled", args=(41,))
        logger = logging.getLogger("tests.workers.labels")
        logger.addFilter(ContextFilter())
        with caplog.at_level(logging.INFO, logger="tests.workers.labels"):
            logger.info("working")
        tasks._unbind_batch_from_logs(task_id="labelled")
        with caplog.at_level(logging.INFO, logger="tests.workers.labels"):
            logger.info("done")
    finally:
        get_settings.cache_clear()
    working, done = caplog.records
    assert working.batch_id == 41
    assert not hasattr(done, "batch_id")
