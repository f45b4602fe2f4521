"""Beat and workers as Celery runs them, in threads of the test's process.

For tests about how work is shared out between sends: the tick runs every
``beat`` seconds and puts the batch ids it hands out on one queue, which
``count`` workers take from, first in, first out (as the broker hands them
out), each with a Deliverer, and so lanes and connections, of its own.
"""

from __future__ import annotations

import queue
import threading

from newsletter.sending import delivery, lifecycle
from newsletter.store.db import session_scope


class Workers:
    """Beat and ``count`` workers as Celery runs them: the tick every ``beat``
    seconds hands batch ids to one queue, taken first in, first out, each
    delivered by a worker with a Deliverer (and so lanes) of its own."""

    def __init__(self, settings, count, beat=0.2):
        self.settings, self.beat = settings, beat
        self.queue: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._beat, daemon=True)]
        self.threads += [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _beat(self):
        try:
            while not self.stopping.is_set():
                with session_scope(self.settings) as session:
                    for batch_id in lifecycle.tick(session, self.settings):
                        self.queue.put(batch_id)
                self.stopping.wait(self.beat)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.errors.append(exc)

    def _work(self, number):
        deliverer = delivery.Deliverer(self.settings)
        try:
            while not self.stopping.is_set():
                try:
                    batch_id = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                with session_scope(self.settings) as session:
                    deliverer.deliver_batch(session, batch_id)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.errors.append(exc)
        finally:
            deliverer.close()
