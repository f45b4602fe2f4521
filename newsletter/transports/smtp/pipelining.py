"""The mail transactions of one SMTP session, pipelined when the server offers it.

(With CHUNKING too, a session streams its messages instead: chunking.py.
The lanes here, and the queue of work they share, serve both.)

One command at a time, a message costs four round trips: MAIL, RCPT, DATA
and the message each wait for their reply. With PIPELINING (RFC 2920) MAIL,
RCPT and DATA go out as one group, and the next message's group goes out in
the same write as the previous message's final dot, so a message costs one
round trip: the wait for DATA's 354 before its data may follow. That wait
also bounds what is in flight: at most one message whose data went out and
whose final reply has not come back, per session.

Replies come back in the order of the commands and are matched by position.
A reply that cannot answer its command (a 354 to RCPT, a 250 to DATA) means
the server answers out of turn: the session is dropped and the transport
sends one command at a time from then on.

Each message's outcome stays exact:

- a refused MAIL, RCPT or DATA fails that message only; the next group starts
  with RSET;
- the line breaking after the final dot went out, before its reply came: the
  message is uncertain (the server may have taken it);
- the line breaking before any of a message's data went out, a 421 answering
  the message ahead of it, or "452 too many recipients": nothing of it was
  taken, so it goes back to the chunk for one more try on a new session;
- a 421 answering a message's own command fails that message for now.

A 421, or a 450/451/452 whose enhanced code is 4.7.x or whose text speaks of
a rate or of "too many" (not "too many recipients"), is a throttle: the
server wants this account to slow down. The lanes start no more messages,
of that call or of any other call waiting in the queue of work (``Work``),
until the call that met the throttle has been answered; those not yet
started come back throttled and untried (``Result.held_back``).
"""

from __future__ import annotations

import logging
import itertools
import re
import smtplib
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result

log = logging.getLogger(__name__)

# Where common servers put their queue id in the final 250 reply.
_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([\w.@-]+)", re.IGNORECASE),  # Postfix and many more
    re.compile(r"\bid=([\w.-]+)", re.IGNORECASE),  # Exim
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?([\w.-]+) Message accepted", re.IGNORECASE),  # Sendmail
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?OK\s+\d+\s+([\w.-]+) - gsmtp"),  # Gmail
    re.compile(r"^Ok\s+([\w-]{20,})$"),  # Amazon SES
)
_ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_RATE_WORDS = re.compile(r"\brate\b|rate.?limit|too many|too fast|slow down", re.IGNORECASE)
# A line break or angle bracket in an address would end or bend the command.
_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


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


@dataclass
class _InFlight:
    """A message whose commands went out."""

    index: int
    envelope: Envelope
    kinds: tuple[str, ...]  # the commands of its group: ("RSET",) "MAIL", "RCPT", "DATA" or "BDAT"
    commands: tuple[bytes, ...]
    # What follows: with DATA, after the 354, the message and its final dot; with
    # BDAT, right after its command, the message itself (no copy of it is made).
    data: bytes = b""
    verdict: Result | None = None  # decided before the final reply (a server that said 354 anyway)
    written: bool = False  # streamed (BDAT): all of its group went out
    replies: list[tuple[int, bytes]] = field(default_factory=list)  # streamed: the replies read so far


class _Broken(Exception):
    """The line broke; ``after_dot``: once the waiting message's final dot had gone out."""

    def __init__(self, cause: Exception, after_dot: bool = False):
        super().__init__(str(cause) or type(cause).__name__)
        self.after_dot = after_dot


class _OutOfTurn(Exception):
    def __init__(self, kind: str, code: int, text: bytes):
        super().__init__(f"answers out of turn ({reply_text(code, text)} to {kind})")


class Lane:
    """One SMTP session at a time, opened when needed and reused for up to ``limit`` messages.

    Used by one thread at a time: ``send_many`` gives each lane to one worker.
    """

    def __init__(self, open_session: Callable[[], smtplib.SMTP], limit: int, pipelining: Pipelining,
                 chunking=None):
        self._open_session = open_session
        self._limit = limit
        self._pipelining = pipelining
        # chunking.Chunking, or None: streams messages with BDAT when the server offers CHUNKING.
        self._chunking = chunking
        self._smtp: smtplib.SMTP | None = None
        self._used = 0
        self._needs_reset = False  # the last transaction was refused before its data
        self._ending = False  # the server wants no more on this session
        self._again: list[int] = []  # messages of the chunk to start the next session with

    def drain(self, chunk: Work) -> SetupFailed | None:
        """Send from ``chunk`` until it is empty. A lane that cannot open a session
        stops, rather than wait out a connect timeout per message; the messages
        it holds go back for the other lanes when one of them is sending (the
        server may limit connections), and fail for now with the reason when
        none is (the server is away: one wait is enough)."""
        while True:
            index = self._take(chunk)
            if index is None:
                return None
            try:
                smtp = self._session()
            except SetupFailed as failure:
                log.warning("SMTP session failed: %s", failure.error)
                for waiting in [index, *self._again]:
                    if chunk.others_active():
                        chunk.put_back(waiting)
                    else:
                        chunk.finish(waiting, failure.result_for(chunk.envelope(waiting)))
                self._again.clear()
                return failure
            self._run(smtp, chunk, index)

    def _take(self, chunk: Work) -> int | None:
        """The next message: one kept for the next session first, unless a throttle
        holds the queue (those come back held back, see ``Work``)."""
        if self._again and chunk.hold_back(self._again):
            self._again.clear()
        while self._again:
            number = self._again.pop(0)
            if chunk.may_hand_over(number):
                return number
        return chunk.take()

    def _try_again(self, chunk: Work, index: int) -> bool:
        """Send a message nothing of which was taken first on the next session, once."""
        if not chunk.may_try_again(index):
            return False
        self._again.append(index)
        return True

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self._discard()

    def _session(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = self._open_session()
            self._used, self._needs_reset, self._ending = 0, False, False
        return self._smtp

    def _discard(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            except OSError:
                pass
        self._smtp = None

    # -- the transactions of one session ---------------------------------------
    def _run(self, smtp: smtplib.SMTP, chunk: Work, index: int) -> None:
        """Carry messages from ``chunk`` over this session, starting with ``index``,
        until the chunk is empty, the session is used up or it ends."""
        pipelined = self._pipelining.use(smtp)
        if pipelined and self._chunking is not None and self._chunking.use(smtp):
            self._chunking.stream(self, smtp, chunk, index)
            if self._smtp is not None and self.used_up:
                self.close()
            return
        current = self._start(smtp, chunk, index)
        waiting: _InFlight | None = None  # data ready, to go out with the next write
        while current is not None or waiting is not None:
            try:
                if pipelined:
                    self._pipelined_step(smtp, chunk, waiting, current)
                else:
                    self._lockstep_step(smtp, chunk, waiting, current)
            except _Broken as broken:
                self._settle_broken(chunk, waiting, current, broken)
                self._discard()
                return
            except _OutOfTurn as wrong:
                if pipelined:
                    self._pipelining.distrust(str(wrong))
                # Replies are read only after the writes: a waiting message's data went out.
                self._settle_broken(chunk, waiting, current, _Broken(wrong, after_dot=True))
                self._discard()
                return
            if self._smtp is None:  # a 421: the server closed the session
                return
            waiting = current if current is not None and current.data else None
            current = self._next(smtp, chunk)
        if self.used_up:
            self.close()

    def _pipelined_step(self, smtp, chunk: Work, waiting: _InFlight | None, current: _InFlight | None) -> None:
        """One write: the waiting message's data and the next group; then their replies."""
        data = waiting.data if waiting else b""
        _write(smtp, data + (b"".join(current.commands) if current else b""), dot_end=len(data))
        if waiting is not None:
            if not self._finish_data(smtp, chunk, waiting, [current] if current is not None else []):
                return
        if current is not None:
            replies = []
            for kind in current.kinds:
                replies.append(_read(smtp, kind))
                if replies[-1][0] == 421:
                    break  # the server closes: no more replies will come
            self._finish_group(chunk, current, replies)

    def _lockstep_step(self, smtp, chunk: Work, waiting: _InFlight | None, current: _InFlight | None) -> None:
        """Each command waits for its reply; a refusal ends the group."""
        if waiting is not None:
            _write(smtp, waiting.data, dot_end=len(waiting.data))
            if not self._finish_data(smtp, chunk, waiting):
                if current is not None:
                    chunk.put_back(current.index)  # none of its commands went out
                return
        if current is None:
            return
        if waiting is not None and not chunk.may_hand_over(current.index):
            # Taken before the last answer came; its caller no longer lets it go out.
            self._used -= 1
            self._needs_reset = self._needs_reset or current.kinds[0] == "RSET"
            return
        replies = []
        for kind, command in zip(current.kinds, current.commands):
            _write(smtp, command)
            replies.append(_read(smtp, kind))
            if not _goes_on(kind, replies[-1][0]):
                break
        self._finish_group(chunk, current, replies)

    def _finish_data(self, smtp, chunk: Work, message: _InFlight, behind: list[_InFlight] = ()) -> bool:
        """Read the reply to a message's final dot; False when the server closes the session
        (a 421), and then ``behind``, whose commands went out after the dot, were never read:
        held back with a throttle, or first on the next session, once."""
        try:
            code, text = _read(smtp, "the message")
        except _Broken as broken:
            raise _Broken(broken, after_dot=True) from None
        if message.verdict is not None:
            result = message.verdict
        elif 200 <= code < 300:
            result = Result(message.envelope.delivery_id, SENT, provider_message_id=_queue_id(text), code=code)
        else:
            result = _refused(message.envelope, code, text)
        if code != 421:
            chunk.finish(message.index, result)
            return True
        for unread in chunk.finish(message.index, result, [m.index for m in behind]):
            if not self._try_again(chunk, unread):
                chunk.finish(unread, _closing_result(chunk.envelope(unread)))
        self._discard()
        return False

    def _finish_group(self, chunk: Work, message: _InFlight, replies: list[tuple[int, bytes]]) -> None:
        """Decide what a group's replies mean for its message."""
        refusal, go_ahead, too_many = None, False, False
        for kind, (code, text) in zip(message.kinds, replies):
            if kind == "RSET" and code != 421:
                continue
            if kind == "DATA" and code == 354:
                go_ahead = True
            elif code // 100 != 2 and refusal is None:
                too_many = kind == "RCPT" and _too_many_recipients(code, text)
                refusal = _refused(message.envelope, code, text, blame_recipient=kind != "MAIL")
            if code == 421:
                break
        if go_ahead:
            # A server that said 354 despite a refusal gets an empty message, ended at once.
            message.data = b".\r\n" if refusal else _dot_stuffed(message.envelope.message, message.envelope.dot_free)
            message.verdict = refusal
            return
        self._needs_reset = True
        if any(code == 421 for code, _ in replies):
            self._discard()
        if too_many:
            # RFC 5321 4.5.3.1.10: the rest in a new transaction; here, a new session.
            self._ending = True
            if self._try_again(chunk, message.index):
                return
        chunk.finish(message.index, refusal)

    def _settle_broken(self, chunk: Work, waiting: _InFlight | None, current: _InFlight | None,
                       broken: _Broken) -> None:
        """The line broke: the waiting message is uncertain if its final dot went out."""
        if waiting is not None and not chunk.settled(waiting.index):
            if broken.after_dot:
                chunk.finish(waiting.index, _uncertain(waiting.envelope, broken))
            else:
                chunk.finish(waiting.index, _broke(waiting.envelope, broken))
        if current is not None and not chunk.settled(current.index):
            if not self._try_again(chunk, current.index):
                chunk.finish(current.index, _broke(current.envelope, broken))

    # -- which message next --------------------------------------------------------
    @property
    def used_up(self) -> bool:
        """The session has carried its share, or the server wants no more on it."""
        return self._used >= self._limit or self._ending

    def _next(self, smtp, chunk: Work, chunking: bool = False) -> _InFlight | None:
        if self.used_up:
            return None
        index = self._take(chunk)
        return self._start(smtp, chunk, index, chunking) if index is not None else None

    def _start(self, smtp, chunk: Work, index: int | None, chunking: bool = False) -> _InFlight | None:
        """The commands for message ``index`` (or the next one that can be sent at all)."""
        while index is not None:
            envelope = chunk.envelope(index)
            problem = _address_problem(smtp, envelope)
            if problem is None:
                break
            chunk.finish(index, Result(envelope.delivery_id, PERMANENT, enhanced_code="5.6.7", error=problem,
                                       unsendable=True))
            index = chunk.take()
        if index is None:
            return None
        data = b""
        if chunking:
            data = _bdat_payload(envelope.message)
            kinds, commands = ("MAIL", "RCPT", "BDAT"), _group(smtp, envelope, bdat_size=len(data))
        else:
            kinds, commands = ("MAIL", "RCPT", "DATA"), _group(smtp, envelope)
        if self._needs_reset:
            kinds, commands = ("RSET",) + kinds, (b"RSET\r\n",) + commands
            self._needs_reset = False
        self._used += 1
        return _InFlight(index, envelope, kinds, commands, data)


def _group(smtp: smtplib.SMTP, envelope: Envelope, bdat_size: int | None = None) -> tuple[bytes, ...]:
    """MAIL, RCPT and DATA for one message, with the parameters the server takes;
    with ``bdat_size``, MAIL, RCPT and the BDAT of a message of that size, sent whole."""
    options = []
    if smtp.has_extn("size"):
        options.append(f"SIZE={len(envelope.message)}")
    if smtp.has_extn("8bitmime") and not envelope.message.isascii():
        options.append("BODY=8BITMIME")
    if not (envelope.sender + envelope.recipient).isascii():
        options.append("SMTPUTF8")
    mail = " ".join([f"MAIL FROM:<{envelope.sender}>"] + options)
    last = b"DATA\r\n" if bdat_size is None else b"BDAT %d LAST\r\n" % bdat_size
    return f"{mail}\r\n".encode(), f"RCPT TO:<{envelope.recipient}>\r\n".encode(), last


def _bdat_payload(message: bytes) -> bytes:
    """The message as one BDAT chunk (RFC 3030): sent as it is, no dot-stuffing, no final dot."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"  # as DATA would end it


def _address_problem(smtp: smtplib.SMTP, envelope: Envelope) -> str | None:
    addresses = envelope.sender + envelope.recipient
    if _UNSAFE_IN_ADDRESS.search(addresses):
        return "the address holds a line break, a control character or an angle bracket"
    if not addresses.isascii() and not smtp.has_extn("smtputf8"):
        return (f"unsendable: {envelope.recipient} has a local part beyond ASCII and the server does not "
                "offer SMTPUTF8: no message can reach it this way")
    return None


def _write(smtp: smtplib.SMTP, data: bytes, dot_end: int = 0) -> None:
    """Send all of ``data``, whose first ``dot_end`` bytes end with a message's final dot.

    Not sendall(): when the line breaks, what went out decides whether the
    server can have taken the message.
    """
    sock = smtp.sock
    if sock is None:
        raise _Broken(ConnectionError("not connected"))
    view, sent = memoryview(data), 0
    try:
        while sent < len(view):
            sent += sock.send(view[sent:])
    except OSError as exc:
        raise _Broken(exc, after_dot=0 < dot_end <= sent) from exc


def _read(smtp: smtplib.SMTP, kind: str) -> tuple[int, bytes]:
    """The next reply, which must be one that can answer ``kind``."""
    try:
        code, text = smtp.getreply()
    except (smtplib.SMTPException, OSError) as exc:
        raise _Broken(exc) from exc
    fits = code == 354 or code // 100 in (4, 5) if kind == "DATA" else code // 100 in (2, 4, 5)
    if not fits:
        raise _OutOfTurn(kind, code, text)
    return code, text


def _goes_on(kind: str, code: int) -> bool:
    """Whether the next command of the group may follow this reply."""
    if code == 421:
        return False
    return code == 354 if kind == "DATA" else code // 100 == 2 or kind == "RSET"


def is_throttle(code: int, reply: bytes | str) -> bool:
    """Whether a reply asks this sender to slow down (rather than refuse a message)."""
    if code == 421:
        return True
    if code not in (450, 451, 452):
        return False
    text = reply if isinstance(reply, str) else _decode(reply)
    if _too_many_recipients(code, text.encode()):
        return False
    return _enhanced_code(code, text).startswith("4.7.") or bool(_RATE_WORDS.search(text))


def _too_many_recipients(code: int, text: bytes) -> bool:
    return code == 452 and (b"4.5.3" in text or b"too many recipients" in text.lower())


def _dot_stuffed(message: bytes, dot_free: bool = False) -> bytes:
    """The DATA payload: leading dots doubled, ended by a lone dot (RFC 5321 4.5.2).
    ``dot_free``: the builder made sure no line starts with a dot (Envelope.dot_free)."""
    ending = b".\r\n" if message.endswith(b"\r\n") else b"\r\n.\r\n"
    if dot_free:
        return message + ending
    # A newsletter's 60-70 KB hold a handful of lines that start with a dot.
    # Finding them is a scan for the literal (about 35 µs of CPU for the
    # sample's 75 KiB); neither re.sub(rb"(?m)^\.", ...) nor
    # bytes.replace(b"\n.", b"\n..") is as fast (about 100 µs: CPython counts
    # the matches the slow way first), and each made a copy of the message
    # besides. One join builds the payload.
    pieces, start = [b"."] if message.startswith(b".") else [], 0
    for match in _LINE_STARTING_WITH_DOT.finditer(message):
        end = match.start() + 1  # after the line feed: the dot begins the next piece
        pieces += (message[start:end], b".")
        start = end
    pieces.append(message[start:] if start else message)
    pieces.append(ending)
    return b"".join(pieces)


_LINE_STARTING_WITH_DOT = re.compile(rb"\n\.")


def _refused(envelope: Envelope, code: int, reply: bytes, blame_recipient: bool = True) -> Result:
    text = _decode(reply)
    enhanced = _enhanced_code(code, text)
    error = reply_text(code, reply)
    throttled = is_throttle(code, text)
    if not blame_recipient and not throttled:
        # A refused sender is our configuration, not the subscriber's address.
        return Result(envelope.delivery_id, TEMPORARY, code=code, enhanced_code=enhanced,
                      error=f"the server refused the sender {envelope.sender}: {error}")
    status = PERMANENT if 500 <= code < 600 else TEMPORARY
    return Result(envelope.delivery_id, status, code=code, enhanced_code=enhanced, error=error, throttled=throttled)


def _uncertain(envelope: Envelope, cause: Exception) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, uncertain=True,
                  error=f"the connection broke after the message was sent, before the server answered; "
                        f"it may have been delivered ({cause})")


def _broke(envelope: Envelope, cause: Exception) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, error=f"the connection broke: {cause}")


def _closing_result(envelope: Envelope) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, code=421, throttled=True,
                  error="the server closed the session before this message (421), twice")


def _queue_id(reply: bytes) -> str:
    text = _decode(reply).strip()
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


def _enhanced_code(code: int, text: str) -> str:
    match = _ENHANCED_CODE.match(text)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return ""


def reply_text(code: int, reply: bytes | str) -> str:
    text = reply if isinstance(reply, str) else _decode(reply)
    return f"{code} {' '.join(text.split())}"


def _decode(reply: bytes) -> str:
    return reply.decode("utf-8", errors="replace")
