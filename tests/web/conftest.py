"""Fixtures of the tests in this folder: the sample issue rendered, and the console
served on a loopback port with a real worker and beat behind it."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from newsletter.web import create_app
from tests.conftest import SAMPLE_ISSUE, free_port
from tests.console_world import make_world
from tests.pipeline import Pipeline
from tests.web.browser import SUBSCRIBERS


@pytest.fixture(scope="module")
def rendered():
    from newsletter.authoring.publishing import checked_render

    return checked_render(SAMPLE_ISSUE)[0]


@pytest.fixture
def console(tmp_path, postgres_url, redis_url, smtp, migrate):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, BASE_URL=base_url)
    settings = pipeline.settings
    migrate(settings.effective_database_url)
    world = make_world(settings, subscribers=SUBSCRIBERS)
    server = make_server("127.0.0.1", port, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield pipeline, world, base_url
    pipeline.stop_all()
    server.shutdown()
    thread.join(timeout=10)
