"""Health checks for a load balancer and a process manager."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from newsletter.ops.health import worker_health
from newsletter.ops.heartbeats import record_heartbeat
from newsletter.web import create_app
from tests.conftest import ROOT, free_port


def get(settings, path):
    return create_app(settings).test_client().get(path)


def test_healthz_answers_ok_when_the_database_answers(settings):
    response = get(settings, "/healthz")
    assert response.status_code == 200 and response.json["ok"] is True


def test_healthz_answers_503_when_the_database_does_not(settings):
    gone = replace(settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    response = get(gone, "/healthz")
    assert response.status_code == 503
    assert response.json["ok"] is False and "database unreachable" in response.json["message"]


def test_worker_health_needs_a_fresh_heartbeat_for_every_queue(settings, session):
    assert get(settings, "/healthz/workers").status_code == 503
    record_heartbeat(session, node="send@a", queues=("send",), concurrency=2, active_tasks=0)
    session.commit()
    result = worker_health(settings)
    assert not result.ok and "control" in result.message
    assert worker_health(settings, ("send",)).ok
    assert worker_health(settings, node="send@a").ok
    assert not worker_health(settings, node="send@b").ok

    record_heartbeat(session, node="control@a", queues=("control",), concurrency=1, active_tasks=0)
    session.commit()
    assert get(settings, "/healthz/workers").status_code == 200


def test_a_worker_whose_clock_is_off_is_judged_by_the_databases_clock(settings, session):
    """A worker ten minutes slow is alive, and a probe on a host ten minutes fast
    does not call it gone: a liveness check must not restart a healthy worker."""
    from datetime import timedelta

    import time_machine

    from newsletter.ops.heartbeats import record_batch_run, worker_statuses
    from newsletter.sending.records import BatchReport
    from newsletter.store import clock
    from newsletter.store.models import BatchRun

    now = clock.read(session)
    with time_machine.travel(now - timedelta(minutes=10), tick=True):
        record_heartbeat(session, node="send@slow", queues=("send",), concurrency=2, active_tasks=1)
        record_batch_run(session, BatchReport(batch_id=7), send_id=3, worker="send@slow", seconds=1.5)
        session.commit()
    with time_machine.travel(now + timedelta(minutes=10), tick=True):
        assert worker_health(settings, ("send",)).ok
        [worker] = worker_statuses(session, settings)
    assert worker.alive and worker.seconds_since_seen < 60
    run = session.query(BatchRun).one()
    assert run.duration_seconds == 1.5 and (run.finished_at - run.started_at).total_seconds() == 1.5
    assert abs((run.finished_at - now).total_seconds()) < 60  # the database's time, not the slow host's


@pytest.mark.slow  # starts processes of its own
def test_the_worker_health_command_exits_non_zero_when_no_worker_answers(settings, session, tmp_path):
    env = {"NEWSLETTER_DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "PATH": "/usr/bin:/bin", "SECRET_KEYS": "test-secret-key"}
    command = [sys.executable, "-m", "newsletter", "ops", "health", "--worker", "--queue", "send"]
    failed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "no running worker consumes: send" in failed.stderr

    record_heartbeat(session, node="send@a", queues=("send",), concurrency=2, active_tasks=0)
    session.commit()
    passed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert passed.returncode == 0, passed.stderr
