"""Postfix's smtp-sink for the SMTP transport tests; ``sink_options`` are its flags."""

from __future__ import annotations

import pytest

from tests import smtp_sink
from tests.conftest import _missing


@pytest.fixture
def sink_options():
    return ()


@pytest.fixture
def sink(sink_options):
    if not smtp_sink.installed():
        _missing("smtp-sink", "Postfix is not installed; scripts/install-test-services installs it")
    with smtp_sink.SmtpSink(*sink_options) as server:
        yield server
