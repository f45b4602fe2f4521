"""A mail sink on loopback for the demo and for development.

It accepts every message and writes it, as received, to a folder of .eml
files. It is not a mail server: it relays nothing.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            number = next(self._numbers)
            self.count += 1
        path = self.folder / f"{number:07d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.rename(path)
        return "250 2.0.0 Ok: queued as " + f"{number:07d}"


class MailSink:
    """Start with ``start()``; ``port`` says where it listens; ``stop()`` ends it."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.handler = _Handler(folder)
        self._controller = Controller(self.handler, hostname=host, port=port or _free_port(host))

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def received(self) -> int:
        return self.handler.count

    def start(self) -> "MailSink":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
