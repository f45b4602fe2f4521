"""A folder of .eml files: the transport of the embedded default and of tests.

Each message becomes one file, written to a hidden temporary name, flushed to
disk and then linked into place, so a reader of the folder never sees half a
message. The file holds the message as a mailbox would store it: a
``Return-Path`` and ``Delivered-To`` header carrying the envelope, then the
message bytes unchanged.

File names are ``<delivery_id>-<hash>.eml`` (the hash is of the Message-ID, or
of the recipient when there is none). Sending the same delivery twice never
overwrites the first file: the second copy is ``<delivery_id>-<hash>-2.eml``
and so on. The send ledger is what prevents duplicates; the outbox's job is to
make any duplicate that slips through visible, so a test can count files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Sequence

from newsletter.transports.base import SENT, TEMPORARY, Envelope, Result, Transport


class OutboxTransport(Transport):
    TRANSPORT = "outbox"  # its one setting, OUTBOX_DIR: the outbox group of config.py
    name = "outbox"
    utf8_local_parts = True  # a file takes any address

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    @classmethod
    def from_settings(cls, settings) -> OutboxTransport:
        return cls(settings.outbox_dir)

    @staticmethod
    def account_key(settings) -> str:
        return "outbox"

    def send_many(self, envelopes: Sequence[Envelope]) -> list[Result]:
        return [self._write(envelope) for envelope in envelopes]

    def files(self) -> list[Path]:
        """Every message written so far, oldest name first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.eml"))

    def files_for(self, delivery_id: int) -> list[Path]:
        """The files written for one ledger row: more than one is a duplicate."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"{delivery_id}-*.eml"))

    def _write(self, envelope: Envelope) -> Result:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = _publish(self.folder, _stored_bytes(envelope), _base_name(envelope))
        except OSError as exc:
            # A full disk or a folder we may not write to: nothing was delivered.
            return Result(envelope.delivery_id, TEMPORARY, error=f"cannot write to the outbox {self.folder} ({exc.strerror or exc}): check OUTBOX_DIR")
        return Result(envelope.delivery_id, SENT, provider_message_id=path.name)


def _base_name(envelope: Envelope) -> str:
    key = envelope.message_id or envelope.recipient
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{envelope.delivery_id}-{digest}"


def _stored_bytes(envelope: Envelope) -> bytes:
    trace = f"Return-Path: <{envelope.sender}>\r\nDelivered-To: {envelope.recipient}\r\n"
    return trace.encode("utf-8") + envelope.message


def _publish(folder: Path, data: bytes, base_name: str) -> Path:
    """Write ``data`` durably under a name no other file has; return that path."""
    handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        path = _link_unique(Path(temporary), folder, base_name)
    finally:
        os.unlink(temporary)
    _fsync_folder(folder)
    return path


def _link_unique(temporary: Path, folder: Path, base_name: str) -> Path:
    # os.link fails rather than replace an existing file, unlike rename, so two
    # writers of the same delivery both keep their copy.
    copy = 1
    while True:
        path = folder / (f"{base_name}.eml" if copy == 1 else f"{base_name}-{copy}.eml")
        try:
            os.link(temporary, path)
            return path
        except FileExistsError:
            copy += 1


def _fsync_folder(folder: Path) -> None:
    # The new name must survive a crash too, not only the file's bytes.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open a folder; the data is synced already
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
