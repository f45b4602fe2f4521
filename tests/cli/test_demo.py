"""The README's demo: the sample issue sent on the embedded defaults (no Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from email import message_from_bytes, policy

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_sends_the_sample_issue_to_every_made_up_subscriber_once(tmp_path):
    """As the README runs it (1,000 people): a send long enough that the beat's
    ticks queue up behind it, as they do for a user."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "TRANSPORT")}
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "demo", "--subscribers", "1000", "--delay", "1", "--folder", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1000 sent" in result.stdout
    received = sorted((folder / "received").glob("*.eml"))
    recipients = Counter()
    for path in received:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        recipients[message["To"].addresses[0].addr_spec] += 1
        assert message["Subject"] == "Together We're Better: September 2021"
    assert len(recipients) == 1000 and set(recipients.values()) == {1}
    assert (folder / "build" / "web" / "together-were-better" / "2021-09" / "index.html").exists()
    assert (folder / "broker").is_dir()  # the embedded broker carried the tasks

    # The README's next step: `ops status` finds nothing wrong once the demo is over
    # (no beat ticks left on the control queue with no worker to take them).
    status = subprocess.run([sys.executable, "-m", "newsletter", "ops", "status", "--json"], cwd=ROOT,
                            env=env | {"NEWSLETTER_DATA_DIR": str(folder)}, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["problems"] == [] and {q["name"]: q["depth"] for q in report["queues"]} == {"control": 0, "send": 0}
