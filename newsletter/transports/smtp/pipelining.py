"""The mail transactions of one SMTP session, pipelined when the server offers it.

(With CHUNKING too, a session streams its messages instead: chunking.py.
The lanes here, and the queue of work they share (work.py), serve both.)

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
import smtplib
from typing import Callable

from newsletter.transports.base import PERMANENT, SENT, Result
from newsletter.transports.smtp.replies import (
    _broke,
    _closing_result,
    _queue_id,
    _refused,
    _too_many_recipients,
    _uncertain,
)
from newsletter.transports.smtp.wire import (
    _address_problem,
    _bdat_payload,
    _Broken,
    _dot_stuffed,
    _goes_on,
    _group,
    _InFlight,
    _OutOfTurn,
    _read,
    _write,
)
from newsletter.transports.smtp.work import Pipelining, SetupFailed, Work

log = logging.getLogger(__name__)


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
