"""`newsletter preview`: the page an editor keeps open while writing an issue."""

from __future__ import annotations

import html
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.authoring.preview import PreviewServer
from tests.conftest import SAMPLE_ISSUE

NEW_TEXT = "A sentence the editor added while the preview was open."


@pytest.fixture
def issue_folder(tmp_path) -> Path:
    """A copy of the sample issue with its publication folder, for editing."""
    publication = tmp_path / SAMPLE_ISSUE.parent.parent.name
    shutil.copytree(SAMPLE_ISSUE.parent.parent, publication)
    return publication / "issues" / SAMPLE_ISSUE.name


@pytest.fixture
def preview(issue_folder):
    server = PreviewServer(issue_folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # An edit made before the watcher is in place would never be seen.
    assert server.state.watching.wait(60), "the preview's watcher did not start"
    yield server
    server.shutdown()
    thread.join(timeout=10)


def get(server: PreviewServer, path: str) -> str:
    with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def wait_for_new_version(server: PreviewServer, seen: str) -> str:
    """The version after ``seen``, once the watcher has re-rendered (as the page's poll sees it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        version = get(server, "/version")
        if version != seen:
            return version
        time.sleep(0.1)
    pytest.fail("the preview did not re-render within 30 s of the change")


def frames(page: str) -> list[str]:
    return re.findall(r'<iframe src="([^"]+)"', page)


def test_the_page_shows_the_email_and_the_web_copy_side_by_side(preview):
    page = get(preview, "/")
    email_src, web_src = frames(page)

    email, web = get(preview, email_src), get(preview, web_src)

    assert "Preview: Together We're Better" in html.unescape(page)
    assert "Prem Singh" in email and "Prem Singh" in web
    # The sample reader's details are filled in; nothing is left for a subscriber to see raw.
    assert "{{" not in email and "unsubscribe" in email.lower()
    # Pictures in the email come from the local web copy, so they show without publishing.
    image = re.search(r'src="/web/([^"]+\.png)"', email)
    assert image, "the email shows no picture from the web copy"
    with urllib.request.urlopen(preview.url + "web/" + image.group(1), timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png" and response.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_edited_section_appears_after_the_version_changes(preview, issue_folder):
    version = get(preview, "/version")
    assert NEW_TEXT not in get(preview, "/email")
    section = issue_folder / "01-chair.md"
    section.write_text(section.read_text() + f"\n{NEW_TEXT}\n")

    wait_for_new_version(preview, version)

    assert NEW_TEXT in get(preview, "/email")
    assert NEW_TEXT in get(preview, "/web/")


def test_broken_yaml_shows_its_file_and_line_on_the_page_and_the_issue_comes_back_when_fixed(preview, issue_folder):
    manifest = issue_folder / "issue.yaml"
    good = manifest.read_text()
    lines = good.splitlines()
    broken_line = next(n for n, line in enumerate(lines, 1) if line.startswith("title:"))
    lines[broken_line - 1] = "title: [Together We're Better"  # an unclosed list
    version = get(preview, "/version")

    manifest.write_text("\n".join(lines) + "\n")
    version = wait_for_new_version(preview, version)

    page, email = get(preview, "/"), get(preview, "/email")
    for shown in (page, email):
        assert re.search(rf"issue\.yaml:{broken_line + 1}\b|issue\.yaml:{broken_line}\b", shown), shown
        assert "YAML cannot be read" in shown

    manifest.write_text(good)
    wait_for_new_version(preview, version)

    assert "YAML cannot be read" not in get(preview, "/")
    assert "Prem Singh" in get(preview, "/email")


def test_the_command_says_when_the_port_is_taken(issue_folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(main, ["preview", str(issue_folder), "--port", str(port)])

    assert result.exit_code != 0
    assert f"cannot serve on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
