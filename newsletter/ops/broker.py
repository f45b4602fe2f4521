"""How many messages wait in each queue, and for how long: read from the broker.

Reads Redis (kombu's list layout) or the embedded broker's folder directly,
without Celery: quick, and the same in the CLI, the web app and tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from newsletter.config import Settings
from newsletter.ops import queues

# The header workers/ put on every task message when it is published.
PUBLISHED_AT_HEADER = "published_at"

# kombu's Redis transport keeps one list per priority step: "send",
# "send\x06\x163", ...; messages are LPUSHed and BRPOPped, so the oldest is last.
_REDIS_PRIORITY_SEPARATOR = "\x06\x16"
_REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class QueueStats:
    name: str
    depth: int
    oldest_age_seconds: float | None  # None: empty, or the age cannot be told


class BrokerView(Protocol):
    def queue_stats(self, names: tuple[str, ...]) -> list[QueueStats]: ...


def queue_names() -> tuple[str, ...]:
    """The queues workers consume."""
    return queues.ALL


def broker_view(settings: Settings) -> BrokerView:
    if settings.redis_url:
        return RedisBroker(settings.redis_url)
    return FolderBroker(embedded_queue_folder(settings))


def embedded_queue_folder(settings: Settings) -> Path:
    # Must match workers.celery.broker_options (which imports Celery).
    return settings.data_dir / "broker" / "queue"


class RedisBroker:
    def __init__(self, url: str, timeout: float = 2.0):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def queue_stats(self, names: tuple[str, ...]) -> list[QueueStats]:
        return [self._one(name) for name in names]

    def _one(self, name: str) -> QueueStats:
        keys = [name if step == 0 else f"{name}{_REDIS_PRIORITY_SEPARATOR}{step}" for step in _REDIS_PRIORITY_STEPS]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
            pipe.lindex(key, -1)
        answers = pipe.execute()
        depth = sum(answers[0::2])
        published = [_published_at(raw) for raw in answers[1::2] if raw is not None]
        known = [p for p in published if p is not None]
        age = max(0.0, time.time() - min(known)) if known else None
        return QueueStats(name, depth, age)


def _published_at(raw: bytes) -> float | None:
    try:
        headers = json.loads(raw).get("headers") or {}
        return float(headers[PUBLISHED_AT_HEADER])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class FolderBroker:
    """kombu's filesystem transport: one ``<ms>_<uuid>.<queue>.msg`` file per message."""

    def __init__(self, folder: Path):
        self.folder = folder

    def queue_stats(self, names: tuple[str, ...]) -> list[QueueStats]:
        return [self._one(name) for name in names]

    def _one(self, name: str) -> QueueStats:
        times = []
        if self.folder.is_dir():
            for path in self.folder.glob(f"*.{name}.msg"):
                try:
                    times.append(path.stat().st_mtime)
                except FileNotFoundError:  # taken by a worker meanwhile
                    continue
        age = max(0.0, time.time() - min(times)) if times else None
        return QueueStats(name, len(times), age)
