"""Postfix's smtp-sink on a loopback port, a real server that announces PIPELINING.

smtp-sink takes every message and, with ``-d``, writes each to a file of its
own: a few X- lines about the envelope, a Received line it adds, then the
message with LF line endings and dots unstuffed. ``messages()`` reads them
back. Extra command-line options make it misbehave (``-p``: no PIPELINING;
``-q .``: hang up after the final dot without replying; ``-f rcpt``: refuse
every recipient for good).
"""

from __future__ import annotations

import os
import socket
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARY = "/usr/sbin/smtp-sink"


def installed() -> bool:
    return os.access(BINARY, os.X_OK)


@dataclass(frozen=True)
class SunkMessage:
    mail_from: str
    recipients: list[str]
    data: bytes  # the message as received, LF line endings, the sink's Received line taken out


class SmtpSink:
    def __init__(self, *options: str):
        # A folder of its own, not pytest's tmp_path: smtp-sink drops to nobody
        # before it writes, and cannot enter a folder only its owner may.
        self.folder = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        self.folder.chmod(0o777)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.options = options
        self._process: subprocess.Popen | None = None
        self._log = self.folder.with_suffix(".log")

    def start(self) -> SmtpSink:
        command = [BINARY, "-u", "nobody", "-d", str(self.folder / "%Y%m%d%H%M%S."), *self.options,
                   f"{self.host}:{self.port}", "64"]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=5).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    output = self._log.read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(f"smtp-sink did not start: {output}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def messages(self) -> list[SunkMessage]:
        """Every message the sink wrote out, in no particular order."""
        return [_parse(path.read_bytes()) for path in sorted(self.folder.iterdir())]


def _parse(dump: bytes) -> SunkMessage:
    lines = dump.split(b"\n")
    mail_from, recipients = "", []
    while lines[0].startswith(b"X-"):
        name, _, value = lines.pop(0).partition(b": ")
        if name == b"X-Mail-Args":
            mail_from = value.decode().split(">")[0].lstrip("<")
        elif name == b"X-Rcpt-Args":
            recipients.append(value.decode().strip("<>"))
    if lines[0].startswith(b"Received:"):
        lines.pop(0)
        while lines[0].startswith((b"\t", b" ")):
            lines.pop(0)
    # The sink ends the file with one more line break than the message had.
    data = b"\n".join(lines)
    return SunkMessage(mail_from, recipients, data[:-1] if data.endswith(b"\n\n") else data)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
