"""The queue of work an SMTP transport's lanes share: the messages of every
``send_many`` call in progress, whether sessions may pipeline, and a session
that could not be opened.

A throttle met by one lane holds back every lane: they start no more
messages, of that call or of any other call waiting in the queue, until the
call that met the throttle has been answered; those not yet started come back
throttled and untried (``Result.held_back``).
"""

from __future__ import annotations

import itertools
import logging
import smtplib
import threading
from collections import deque
from typing import Callable, Sequence

from newsletter.transports.base import TEMPORARY, Envelope, Result
from newsletter.transports.smtp.replies import is_throttle

log = logging.getLogger(__name__)


class SetupFailed(Exception):
    """A session could not be opened, secured or logged in to: nothing was sent."""

    def __init__(self, error: str, code: int | None = None, reply: bytes | str = b""):
        super().__init__(error)
        self.error = error
        self.code = code
        self.throttled = code is not None and is_throttle(code, reply)  # "421 too many connections"

    def result_for(self, envelope: Envelope) -> Result:
        return Result(envelope.delivery_id, TEMPORARY, code=self.code, error=self.error, throttled=self.throttled)


class Pipelining:
    """Whether sessions may pipeline; shared by the lanes of one transport."""

    def __init__(self, enabled: bool, where: str):
        self.enabled = enabled
        self.where = where

    def use(self, smtp: smtplib.SMTP) -> bool:
        return self.enabled and smtp.has_extn("pipelining")

    def distrust(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            log.warning("the SMTP server at %s announces PIPELINING but %s: sending one command at a time "
                        "from now on (set SMTP_PIPELINING=false to start that way)", self.where, reason)


class Chunk:
    """The envelopes of one ``send_many`` call and their results as they come in."""

    def __init__(self, envelopes: Sequence[Envelope], may_hand_over: Callable[[], bool] | None = None):
        self.envelopes = list(envelopes)
        self.may_hand_over = may_hand_over  # asked before each message goes out (Transport.withdraws)
        self.results: list[Result | None] = [None] * len(self.envelopes)
        self.remaining = len(self.envelopes)
        self.done = threading.Event()
        if not self.envelopes:
            self.done.set()

    def outcomes(self) -> list[Result]:
        self.done.wait()
        return list(self.results)


class Work:
    """The messages of every ``send_many`` call in progress, in the order they came,
    shared by the lanes of one transport: a lane done with one call's messages goes
    on with the next call's, so no connection waits for the slowest at a call's end.

    A lane knows a message by a number given here; ``finish`` puts its result in
    its call's place and wakes the caller when the call is complete.

    A throttle (a result the server answered with "slow down") holds the queue:
    every message not yet started comes back throttled and untried, its own
    call's and every other call's, and so does every call that comes while the
    hold lasts. The lanes share one account, and the other calls are mostly the
    same run's next chunk, handed over before this one was answered: sending
    them would only meet the same throttle and deepen it. The hold ends when the
    call that met the throttle is collected (``collect``): its caller then knows
    of the throttle and records it (delivery tells the account's limiter,
    which then holds every worker) before it asks for more. Holding until an
    explicit word from the caller instead would leave a transport held for
    good when that word never comes (a proof, a sign-up mail, a run that fails
    in between).
    """

    def __init__(self, lanes: int):
        self._lanes = lanes
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pending: deque[int] = deque()
        self._messages: dict[int, tuple[Chunk, int]] = {}
        self._numbers = itertools.count()
        self._tried_again: set[int] = set()
        self._failed: list[SetupFailed] = []  # lanes that could not open a session since the last call came
        self.generation = 0  # calls so far: a lane that failed waits for the next one before trying again
        self.stopping = False
        self._active = 0  # lanes sending now
        self.throttle: Result | None = None  # the throttle that holds the queue, while one does
        self._throttled_call: Chunk | None = None  # the call that met it

    # -- the callers' side -------------------------------------------------------
    def add(self, envelopes: Sequence[Envelope], may_hand_over: Callable[[], bool] | None = None) -> Chunk:
        chunk = Chunk(envelopes, may_hand_over)
        with self._lock:
            for position in range(len(chunk.envelopes)):
                number = next(self._numbers)
                self._messages[number] = (chunk, position)
                if self.throttle is not None:
                    self._settle(number, self.throttle.not_tried(chunk.envelopes[position]))
                else:
                    self._pending.append(number)
            self.generation += 1
            self._failed.clear()
            self._ready.notify_all()
        return chunk

    def collect(self, chunk: Chunk) -> list[Result]:
        """The results of a complete call; a hold its throttle put on the queue ends."""
        results = chunk.outcomes()
        with self._lock:
            if self._throttled_call is chunk:
                self.throttle, self._throttled_call = None, None
                self._ready.notify_all()
        return results

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            self._ready.notify_all()

    # -- the lanes' side ---------------------------------------------------------
    def wait(self, failed_in: int | None) -> bool:
        """Block until there is something to send (and, for a lane that failed in
        generation ``failed_in``, a call newer than that); False when stopping."""
        with self._lock:
            while not self.stopping and (not self._pending or self.generation == failed_in):
                self._ready.wait()
            return not self.stopping

    def begin(self) -> None:
        with self._lock:
            self._active += 1

    def end(self) -> None:
        with self._lock:
            self._active -= 1

    def others_active(self) -> bool:
        """Whether a lane other than the one asking is sending now."""
        return self._active > 1

    def take(self) -> int | None:
        with self._lock:
            while self._pending:
                number = self._pending.popleft()
                if self._may_hand_over(number):
                    return number
            return None

    def may_hand_over(self, number: int) -> bool:
        """Whether the message's caller still lets it go out; if not, it is settled withdrawn."""
        with self._lock:
            return self._may_hand_over(number)

    def _may_hand_over(self, number: int) -> bool:
        chunk, position = self._messages[number]
        if chunk.may_hand_over is None or chunk.may_hand_over():
            return True
        self._settle(number, Result.withdrawn_from(chunk.envelopes[position]))
        return False

    def put_back(self, number: int) -> None:
        """For another lane: this one could not open a session."""
        with self._lock:
            if self.throttle is not None:
                self._settle(number, self.throttle.not_tried(self.envelope(number)))
                return
            self._pending.append(number)
            self._ready.notify_all()  # not only one: a lane that failed would sleep on

    def hold_back(self, numbers: list[int]) -> bool:
        """While a throttle holds the queue, settle messages a lane kept for its next
        session as held back; False (and nothing done) when none holds it."""
        with self._lock:
            if self.throttle is None:
                return False
            for number in numbers:
                self._settle(number, self.throttle.not_tried(self.envelope(number)))
            return True

    def envelope(self, number: int) -> Envelope:
        chunk, position = self._messages[number]
        return chunk.envelopes[position]

    def settled(self, number: int) -> bool:
        return number not in self._messages

    def may_try_again(self, number: int) -> bool:
        """True the first time a message nothing of which was taken asks for another try."""
        with self._lock:
            if number in self._tried_again:
                return False
            self._tried_again.add(number)
        return True

    def finish(self, number: int, result: Result, behind: Sequence[int] = ()) -> list[int]:
        """Settle a message. ``behind``: messages of the lane the server never read
        because it closed the session with this answer; they are held back with
        the rest when a throttle holds the queue, in the same step (so the call
        cannot be collected and the hold end in between), and returned for the
        lane's next session otherwise."""
        with self._lock:
            chunk = self._settle(number, result)
            if result.throttled and not result.held_back and self.throttle is None:
                # The server said to slow down: nothing more starts until this
                # call is collected (see the class's docstring).
                self.throttle, self._throttled_call = result, chunk
                waiting = list(self._pending)
                self._pending.clear()
                for held in waiting:
                    self._settle(held, result.not_tried(self.envelope(held)))
            if self.throttle is None:
                return list(behind)
            for held in behind:
                self._settle(held, self.throttle.not_tried(self.envelope(held)))
            return []

    def _settle(self, number: int, result: Result) -> Chunk:
        """Under the lock: a message's result in its call; wakes the caller when complete."""
        chunk, position = self._messages.pop(number)
        self._tried_again.discard(number)
        chunk.results[position] = result
        chunk.remaining -= 1
        if chunk.remaining == 0:
            chunk.done.set()
        return chunk

    def lane_failed(self, failure: SetupFailed) -> int:
        """A lane could not open a session; when none could, what waits fails for now
        with its reason. The generation the failure belongs to."""
        with self._lock:
            self._failed.append(failure)
            generation = self.generation
            if len(self._failed) < self._lanes:
                return generation
            waiting = list(self._pending)
            self._pending.clear()
        for number in waiting:
            self.finish(number, failure.result_for(self.envelope(number)))
        return generation
