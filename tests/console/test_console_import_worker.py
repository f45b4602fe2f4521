"""A console import run by real Celery worker and beat processes, started as
the Procfile starts them, on the embedded broker (no Redis: the demo's and a
single machine's setup) and on Redis."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from newsletter.console import imports
from newsletter.store.db import session_scope
from newsletter.store.models import ImportJob, PublicationRow, Subscriber
from tests.console_world import make_world
from tests.pipeline import Pipeline

pytestmark = pytest.mark.slow
ROWS = 2500


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_a_waiting_import_is_run_by_the_worker(tmp_path, sqlite_url, request, broker, migrate):
    redis_url = request.getfixturevalue("redis_url") if broker == "redis" else ""
    no_smtp = SimpleNamespace(host="127.0.0.1", port=9)  # the import sends nothing
    pipeline = Pipeline(tmp_path, sqlite_url, redis_url, no_smtp)
    migrate(pipeline.settings.effective_database_url)
    assert pipeline.settings.embedded == (broker == "embedded")
    make_world(pipeline.settings)
    data = ("email,name\n" + "".join(f"person{n}@example.org,Person {n}\n" for n in range(ROWS))).encode()
    with session_scope(pipeline.settings) as session:
        publication = session.scalars(select(PublicationRow)).one()
        job = imports.create_job(session, publication, "everyone", "people.csv", data, "editor@example.org")
        imports.start(session, job)
        job_id = job.id
    try:
        pipeline.start_worker()
        pipeline.start_beat()

        def finished():
            with session_scope(pipeline.settings) as session:
                job = session.get(ImportJob, job_id)
                return job.state in ("finished", "failed") and job

        job = pipeline.wait_for(finished, 120, "the import to finish")
    finally:
        pipeline.stop_all()
    assert (job.state, job.added, job.rows_done, job.data) == ("finished", ROWS, ROWS, None)
    with session_scope(pipeline.settings) as session:
        assert len(session.scalars(select(Subscriber.id)).all()) == ROWS
