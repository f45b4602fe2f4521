"""The README's demo: the sample issue sent on the embedded defaults (no Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from email import message_from_bytes, policy

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_sends_the_sample_issue_to_every_made_up_subscriber_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "TRANSPORT")}
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "demo", "--subscribers", "40", "--delay", "1", "--folder", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40 sent" in result.stdout
    received = sorted((folder / "received").glob("*.eml"))
    recipients = Counter()
    for path in received:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        recipients[message["To"].addresses[0].addr_spec] += 1
        assert message["Subject"] == "Together We're Better: September 2021"
    assert len(recipients) == 40 and set(recipients.values()) == {1}
    assert (folder / "build" / "web" / "together-were-better" / "2021-09" / "index.html").exists()
    assert (folder / "broker").is_dir()  # the embedded broker carried the tasks
