"""The counter the web app holds: clicks and page views queued in memory as the
redirect sees them, classed (``clicks.Classifier``) and written as counts
four times a second by a thread, never while a request waits.

With Redis, the burst and trap rules' memory is shared by the web processes
(``SharedMemory``), in keys named by a keyed digest of the client address
that expire after ``BURST_SECONDS``; without it, each process keeps its own.
If the database is away, counts wait in memory (merged, so memory stays
small) and go with the next write that works.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import threading
import time
from datetime import date

from newsletter.config import Settings
from newsletter.feedback.clicks import (
    BURST_SECONDS,
    Classifier,
    Click,
    Deltas,
    write_deltas,
)
from newsletter.store.db import session_scope

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25  # a SIGKILL loses what came since the last write, and the write under way
MAX_WAITING_KEYS = 200_000  # counts kept while the database is away; beyond, they go
MAX_QUEUED = 1_000_000  # clicks not yet classed (the thread stuck on a database that hangs); beyond, the oldest go


# --- what several web processes saw: short-lived Redis keys ---------------------------------


class SharedMemory:
    """The burst and trap rules' memory, shared by the web processes through Redis.

    One key per client digest, send and message nonce, holding what that client
    fetched of that message, and gone ``BURST_SECONDS`` after its last fetch.
    The key names a keyed digest of the address, never the address. Read once
    and written once per batch (two round trips); when Redis cannot answer,
    each process goes on with its own memory.
    """

    PREFIX = "newsletter:clicks:recent:"

    def __init__(self, url: str):
        import redis

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._set_all = self._redis.register_script(
            "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i], 'PX', ARGV[#KEYS + 1]) end")
        self.ok = True

    def _name(self, key: tuple[bytes, int, str]) -> str:
        client, send_id, nonce = key
        return f"{self.PREFIX}{client.hex()}:{send_id}:{nonce}"

    def before(self, classifier: Classifier, keys: list) -> None:
        if not keys:
            return
        try:
            values = self._redis.mget([self._name(k) for k in keys])
        except self._errors as exc:
            self._away(exc)
            return
        for key, value in zip(keys, values):
            if value is not None:
                classifier.load(key, value)
        self.ok = True

    def after(self, classifier: Classifier, keys: list) -> None:
        if not keys or not self.ok:
            return
        names, values = [], []
        for key in keys:
            data = classifier.export(key)
            if data is not None:
                names.append(self._name(key))
                values.append(data)
        try:  # one command for the whole batch: a command per key would cost more than the clicks
            self._set_all(keys=names, args=[*values, int(BURST_SECONDS * 1000)])
        except self._errors as exc:
            self._away(exc)

    def _away(self, exc: Exception) -> None:
        if self.ok:
            log.warning("click burst memory is this process's own: Redis cannot be reached (%s)", exc)
        self.ok = False


# --- the counter the web app holds --------------------------------------------------------


class ClickCounter:
    """Takes clicks and page views from requests; writes them four times a second from a thread.

    ``record`` and ``page_view`` never block and never touch the database. The
    thread starts on first use in each process (gunicorn forks after import).
    """

    def __init__(self, settings: Settings, *, flush_seconds: float = FLUSH_SECONDS, clock=time.time):
        self.settings = settings
        self.clock = clock  # when a click came; tests move it on
        self.flush_seconds = flush_seconds
        self.secret = hashlib.sha256(b"newsletter.click-client\0" + settings.signing_keys[0].encode()).digest()
        self._queue: collections.deque = collections.deque(maxlen=MAX_QUEUED)
        self._classifier = Classifier()
        self._waiting = Deltas()
        self._lock = threading.Lock()  # one flush at a time
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.database_ok = True
        self.written = 0  # clicks and views written, for tests and the bench
        self.shared = SharedMemory(settings.redis_url) if settings.redis_url else None

    def record(self, click: Click) -> None:
        self._queue.append(click)
        self._ensure_thread()

    def page_view(self, publication_id: int, path: str, day: date) -> None:
        self._queue.append((publication_id, path, day))
        self._ensure_thread()

    def flush(self) -> bool:
        """Class what is queued and write it with whatever waited; True when written."""
        with self._lock:
            deltas = Deltas()
            items = []
            while True:
                try:
                    items.append(self._queue.popleft())
                except IndexError:
                    break
            taken = len(items)
            clicks = [item for item in items if isinstance(item, Click)]
            keys = self._classifier.keys_of(clicks) if self.shared else []
            if self.shared:
                self.shared.before(self._classifier, keys)
            for item in items:
                if isinstance(item, Click):
                    self._classifier.classify(item, deltas)
                else:
                    deltas.views[item] = deltas.views.get(item, 0) + 1
            if self.shared:
                self.shared.after(self._classifier, keys)
            self._waiting.merge(deltas)
            if not len(self._waiting):
                return True
            try:
                with session_scope(self.settings) as session:
                    write_deltas(session, self._waiting)
            except Exception as exc:  # the database is away: keep the counts for the next second
                if self.database_ok:
                    log.warning("click counts wait in memory: the database cannot be written (%s)", exc)
                self.database_ok = False
                self._trim_waiting()
                return False
            if not self.database_ok:
                log.info("click counts written again")
            self.database_ok = True
            self.written += taken
            self._waiting = Deltas()
            return True

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="click-counter", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # never let the thread die: the next second tries again
                log.exception("click counts could not be written")

    def _trim_waiting(self) -> None:
        waiting = self._waiting
        if len(waiting) <= MAX_WAITING_KEYS:
            return
        log.error("click counts dropped: the database has been away too long")
        self._waiting = Deltas()

