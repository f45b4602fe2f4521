"""The package as a user installs it, not as the test suite happens to find it.

A wheel is built from this checkout and installed into fresh virtual
environments in folders outside it: once with no extras, once with
``[server]``. Each must import every module it ships, run ``newsletter``, and
(bare) run the demo to its end. With ``[server]``, the Procfile's processes run
under honcho against the real PostgreSQL and Redis, deliver the sample issue to
1,000 made-up subscribers over SMTP, serve its web copy, and honour a one-click
unsubscribe. No folder is made and no package installed by hand: a missing
dependency or a file the wheel does not ship fails here, as it would for a user.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.smtp_server import smtp_server  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
# The tests that share the [server] environment run on one xdist worker, so it
# is built once (scripts/test runs pytest with --dist loadgroup).
server = pytest.mark.xdist_group("installed-server")

PUBLICATION = ROOT / "examples" / "together-were-better"
HTTP_TIMEOUT = 60  # generous: a busy machine answers late, not wrongly

# Imports every module of both packages (the __main__ module runs the command,
# so it is run below instead) and says where the package was found.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import newsletter, workers
failed = []
for package in (newsletter, workers):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except Exception as exc:
            failed.append(f"{module.name}: {type(exc).__name__}: {exc}")
print(json.dumps({"found_at": newsletter.__file__, "failed": failed}))
"""


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def user_environment(home: Path, venv: Path, **settings: str) -> dict[str, str]:
    """A user's shell: the virtual environment first on PATH, none of the test
    run's own settings, and the current folder outside the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "PYTEST_", "VIRTUAL_ENV"))}
    for name in ("DATABASE_URL", "REDIS_URL", "TRANSPORT", "PYTHONPATH", "SECRET_KEYS", "BASE_URL"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    env.update(settings)
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory, worker_id) -> Path:
    """The wheel, built once per test run: the xdist workers share the run's
    base folder, and the first to get there builds it while the others wait."""
    import fcntl

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / "dist"
    with open(shared / "dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("*.whl")):
            run([sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT])
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="session")
def server_venv(tmp_path_factory, wheel) -> Path:
    return installed(tmp_path_factory, wheel, "server")


def installed(tmp_path_factory, wheel: Path, extras: str) -> Path:
    venv = tmp_path_factory.mktemp(f"venv-{extras or 'bare'}")
    # pip itself need not be copied into each environment (ensurepip costs seconds):
    # this run's pip installs into it, as the environment's own pip would.
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet",
         f"{wheel}[{extras}]" if extras else wheel])
    return venv


def imports_everything(venv: Path, home: Path) -> None:
    result = run([venv / "bin" / "python", "-c", IMPORT_ALL], cwd=home, env=user_environment(home, venv))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == []
    assert Path(report["found_at"]).is_relative_to(venv), "imported from the checkout, not the wheel"


def runs_the_command_and_the_demo(venv: Path, home: Path, subscribers: int) -> None:
    env = user_environment(home, venv)
    help_text = run([venv / "bin" / "newsletter", "--help"], cwd=home, env=env).stdout
    assert "schedule" in help_text and "demo" in help_text

    demo = run([venv / "bin" / "newsletter", "demo", "--subscribers", subscribers, "--delay", "1", "--timeout", "240"],
               cwd=home, env={**env, "COLUMNS": "200"})
    assert "finished" in demo.stdout
    # Everything the demo wrote is in var/ of the folder it ran in.
    received = sorted((home / "var" / "demo" / "received").glob("*.eml"))
    assert len(received) == subscribers
    recipients = {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"] for p in received}
    assert len(recipients) == subscribers


def test_the_wheel_without_extras_runs_the_command_and_the_demo(tmp_path_factory, wheel, tmp_path):
    venv = installed(tmp_path_factory, wheel, "")
    imports_everything(venv, tmp_path)
    runs_the_command_and_the_demo(venv, tmp_path, 25)


FLOWER_ENTRY_POINT = """
from importlib.metadata import entry_points
(flower,) = [e for e in entry_points(group="celery.commands") if e.name == "flower"]
flower.load()
"""


@server
def test_the_wheel_with_server_imports_the_web_app_celery_and_flower(server_venv, tmp_path):
    venv = server_venv
    imports_everything(venv, tmp_path)
    env = user_environment(tmp_path, venv)
    run([venv / "bin" / "python", "-c", "from newsletter.web import create_app; create_app()"], cwd=tmp_path, env=env)
    run([venv / "bin" / "celery", "-A", "workers.celery", "report"], cwd=tmp_path, env=env)
    run([venv / "bin" / "python", "-c", FLOWER_ENTRY_POINT], cwd=tmp_path, env=env)
    runs_the_command_and_the_demo(venv, tmp_path, 10)


class Deployment:
    """The Procfile under honcho, from an app folder with nothing in it."""

    def __init__(self, venv: Path, app: Path, env: dict[str, str], port: int):
        self.venv, self.app, self.env, self.port = venv, app, env, port
        self.log = app / "honcho.log"
        self.process: subprocess.Popen | None = None

    def newsletter(self, *args) -> str:
        return run([self.venv / "bin" / "newsletter", *args], cwd=self.app, env=self.env).stdout

    def start(self) -> None:
        command = [sys.executable, "-m", "honcho", "-f", ROOT / "Procfile", "-d", self.app, "start", "-p", self.port]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([str(c) for c in command], cwd=self.app, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_until(self, what: str, condition, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"honcho stopped (exit {self.process.returncode}):\n{self.log_tail()}"
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.log_tail()}")

    def web_answers(self) -> bool:
        return _answers(self.url("/healthz"))

    def send_state(self, send_id: int) -> str:
        status = json.loads(self.newsletter("ops", "status", "--json"))
        return next(s["state"] for s in status["sends"] if s["send_id"] == send_id)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=HTTP_TIMEOUT)
    except (requests.ConnectionError, requests.Timeout):  # not up yet, or still starting
        return False
    return True


def _send_id(scheduled: str) -> int:
    # "Scheduled send 3: ..."
    return int(scheduled.split("Scheduled send", 1)[1].split(":", 1)[0].strip())


@server
def test_the_procfile_from_the_wheel_delivers_serves_and_unsubscribes(
    server_venv, tmp_path, postgres_url, redis_url, smtp_server
):
    venv = server_venv
    app = tmp_path / "app"
    app.mkdir()
    publication = app / "together-were-better"
    shutil.copytree(PUBLICATION, publication)
    port, flower_port = free_port(), free_port()
    env = user_environment(
        tmp_path, venv,
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        SECRET_KEYS="deployment-test-key",
        BASE_URL=f"http://127.0.0.1:{port}",
        TRANSPORT="smtp",
        SMTP_HOST=smtp_server.host,
        SMTP_PORT=str(smtp_server.port),
        SMTP_SECURITY="none",
        BEAT_INTERVAL_SECONDS="1",
        FLOWER_BASIC_AUTH="ops:deployment-test",
        FLOWER_PORT=str(flower_port),
        SEND_CONCURRENCY="2",
        COLUMNS="200",
    )
    deployment = Deployment(venv, app, env, port)

    deployment.newsletter("db", "upgrade")
    deployment.newsletter("publications", "add", publication)
    deployment.newsletter("lists", "create", "staff", "--name", "Staff")
    people = app / "people.csv"
    with people.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name"])
        writer.writerows([f"person{n:04d}@example.com", f"Person {n}"] for n in range(1000))
    deployment.newsletter("subscribers", "import", people, "--list", "staff")

    issue = publication / "issues" / "2021-09"
    try:
        deployment.start()
        deployment.wait_until("the web process answers", deployment.web_answers)
        # Flower runs too, and only behind its password.
        deployment.wait_until("flower answers", lambda: _answers(f"http://127.0.0.1:{flower_port}/"))
        assert requests.get(f"http://127.0.0.1:{flower_port}/", timeout=HTTP_TIMEOUT).status_code == 401
        assert requests.get(f"http://127.0.0.1:{flower_port}/", auth=("ops", "deployment-test"),
                            timeout=HTTP_TIMEOUT).status_code == 200

        # The web app is on loopback here, on purpose: a real send needs the operator's word for that.
        first = _send_id(deployment.newsletter("schedule", issue, "--list", "staff", "--now", "--allow-private-links"))
        deployment.wait_until("the first send finishes", lambda: deployment.send_state(first) == "finished")
        delivered = Counter(r for m in smtp_server.messages for r in m.recipients)
        assert len(delivered) == 1000 and set(delivered.values()) == {1}

        # The web copy, from the web process, with no subscriber's address in it.
        page = requests.get(deployment.url("/together-were-better/2021-09/"), timeout=HTTP_TIMEOUT)
        assert page.status_code == 200
        assert "Together We" in page.text and "@example.com" not in page.text

        # One-click unsubscribe, as a mailbox provider does it (RFC 8058).
        message = email.message_from_bytes(smtp_server.messages[0].data, policy=email.policy.default)
        leaver = smtp_server.messages[0].recipients[0]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = next(u.strip("<> ") for u in message["List-Unsubscribe"].split(",") if "http" in u)
        assert link.startswith(deployment.url("/u/"))
        answer = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 200

        second = _send_id(deployment.newsletter("schedule", issue, "--list", "staff", "--now", "--allow-private-links",
                                                "--resend"))
        deployment.wait_until("the second send finishes", lambda: deployment.send_state(second) == "finished")
        delivered = Counter(r for m in smtp_server.messages for r in m.recipients)
        assert delivered[leaver] == 1
        assert sum(1 for n in delivered.values() if n == 2) == 999
    finally:
        deployment.stop()
    assert deployment.process.returncode is not None
