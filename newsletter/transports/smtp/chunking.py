"""Messages streamed on one SMTP session with CHUNKING (BDAT, RFC 3030).

With DATA, each message waits a round trip for the server's 354 before its
data may follow. ``BDAT <size> LAST`` carries the whole message with no go-ahead,
so a message's MAIL, RCPT and BDAT are one pipelined group (RFC 2920) and the
next group follows at once, without waiting for any reply. Up to ``window``
messages (and about ``window_bytes``) are in flight on a session; their
replies come back in order and are matched by position as they arrive. The
next message goes out as soon as the oldest one is answered, so a session is
never idle while there is work.

Each group after a session's first starts with RSET: when it goes out, the
transaction ahead of it may have been refused and left open (a refused RCPT
still has its BDAT, whose data the server reads and refuses).

Each message's outcome stays exact:

- a refused MAIL or RCPT fails that message only (its BDAT is refused too);
- a BDAT refused after an accepted RCPT fails that message only;
- the line breaking: a message answered before it keeps its answer; one whose
  group all went out and whose final reply did not come is uncertain (the
  server may have taken it); one whose group did not all go out cannot have
  been taken (BDAT LAST counts its bytes) and goes back for one more try;
- a 421: that message fails for now, throttled; those behind it were never
  read by the server and come back throttled, untried, with the rest of the
  work the throttle holds back (see ``Work`` in work.py); a 450,
  451 or 452 that is a throttle (``is_throttle``) fails its message for now,
  throttled, and no more messages start on the session;
- "452 too many recipients": that message and the ones behind it go back
  for one more try on a new session;
- a reply that cannot answer its command (a 354, or a BDAT taken after its
  only recipient was refused): the server answers out of turn; the messages
  not yet answered are uncertain and the transport sends one command at a
  time from then on.
"""

from __future__ import annotations

import smtplib
import socket
from collections import deque

from newsletter.transports.base import SENT, Result
from newsletter.transports.smtp.pipelining import Lane
from newsletter.transports.smtp.replies import _broke, _queue_id, _refused, _too_many_recipients, _uncertain
from newsletter.transports.smtp.wire import _Broken, _InFlight, _OutOfTurn, _read, _write
from newsletter.transports.smtp.work import Work

WINDOW = 16  # messages in flight on one session
WINDOW_BYTES = 2 * 1024 * 1024  # and about this much of them


class Chunking:
    """Whether and how sessions stream with BDAT; shared by the lanes of one transport.

    A lane's session state (messages used, the RSET due, the session itself)
    is the lane's; this drives it while a session streams.
    """

    def __init__(self, enabled: bool, window: int = WINDOW, window_bytes: int = WINDOW_BYTES):
        self.enabled = enabled
        self.window = window
        self.window_bytes = window_bytes

    def use(self, smtp: smtplib.SMTP) -> bool:
        return self.enabled and smtp.has_extn("chunking")

    def stream(self, lane: Lane, smtp: smtplib.SMTP, chunk: Work, index: int) -> None:
        """Carry messages from ``chunk`` over this session, starting with ``index``,
        until the chunk is empty, the session is used up, or it ends."""
        window: deque[_InFlight] = deque()
        in_flight = 0  # bytes of the window
        first: int | None = index
        try:
            while True:
                while len(window) < self.window and in_flight < self.window_bytes:
                    message = lane._start(smtp, chunk, first, True) if first is not None \
                        else lane._next(smtp, chunk, True)
                    first = None
                    if message is None:
                        break
                    window.append(message)  # before the write: a break during it settles the message
                    # Two writes, so the message is sent from the bytes the chunk holds, never
                    # copied: a window of 2 MiB a connection, ten connections, was 20 MiB more.
                    _write(smtp, b"".join(message.commands))
                    _write(smtp, message.data)
                    message.written = True
                    lane._needs_reset = True  # the next group starts with RSET
                    in_flight += len(message.data)
                if not window:
                    return
                message = window[0]
                _read_replies(smtp, message)
                # A 421: the server closes the session, unread what follows (a throttle
                # holds that back; otherwise it goes first on the next session).
                still_open = _settle(lane, chunk, message, behind=list(window)[1:])
                window.popleft()
                in_flight -= len(message.data)
                if not still_open:
                    lane._discard()
                    return
        except _Broken as broken:
            if not isinstance(broken.__cause__, socket.timeout):
                _read_what_came(smtp, window)  # replies that arrived before the line broke still count
            _settle_broken(lane, chunk, window, broken)
            lane._discard()
        except _OutOfTurn as wrong:
            lane._pipelining.distrust(str(wrong))
            for message in window:
                _unanswered(lane, chunk, message, wrong)
            lane._discard()


def _read_replies(smtp: smtplib.SMTP, message: _InFlight) -> None:
    """Read the rest of a message's replies; stop at a 421 (no more will come)."""
    for kind in message.kinds[len(message.replies):]:
        message.replies.append(_read(smtp, kind))
        if message.replies[-1][0] == 421:
            return


def _read_what_came(smtp: smtplib.SMTP, window: deque[_InFlight]) -> None:
    """After a failed write: the answers to messages that went out, while they come."""
    if smtp.sock is None:  # a failed read: smtplib has closed the session
        return
    try:
        for message in window:
            if not message.written:
                return
            _read_replies(smtp, message)
            if message.replies[-1][0] == 421:
                return
    except (_Broken, _OutOfTurn):
        return


def _settle(lane: Lane, chunk: Work, message: _InFlight, behind: list[_InFlight] = ()) -> bool:
    """Decide a message from all its replies; False when the server closes the session
    (with a 421), and then ``behind``, the messages after it, were never read."""
    closes = message.replies[-1][0] == 421
    unread = [m.index for m in behind] if closes else []

    def finish(result: Result) -> None:
        lane._again.extend(chunk.finish(message.index, result, unread))

    refusal, final, too_many = None, None, False
    for kind, (code, text) in zip(message.kinds, message.replies):
        if kind == "RSET" and code != 421:
            continue
        if kind == "BDAT":
            final = (code, text)
        elif code // 100 != 2 and refusal is None:
            too_many = kind == "RCPT" and _too_many_recipients(code, text)
            refusal = _refused(message.envelope, code, text, blame_recipient=kind != "MAIL")
    if final is not None and 200 <= final[0] < 300:
        if refusal is not None:  # its one recipient was refused: it cannot have been taken
            raise _OutOfTurn("BDAT after a refusal", *final)
        finish(Result(message.envelope.delivery_id, SENT, provider_message_id=_queue_id(final[1]), code=final[0]))
        return True
    if too_many:
        # RFC 5321 4.5.3.1.10: the rest in a new transaction; here, a new session.
        # Only the first message refused so pays a try: those behind it went out
        # only because they were in the window.
        if lane._ending:
            _behind(lane, message)
        else:
            lane._ending = True
            _go_again(lane, chunk, message, refusal)
        lane._again.extend(unread)
    elif refusal is not None:
        finish(refusal)
    else:
        finish(_refused(message.envelope, *final))
    return not closes


def _settle_broken(lane: Lane, chunk: Work, window: deque[_InFlight], broken: _Broken) -> None:
    """The line broke: each message by the replies it got; those behind a 421 are held
    back with it, or go again (see ``_settle``)."""
    closed = False
    window = list(window)
    for position, message in enumerate(window):
        if chunk.settled(message.index):
            continue
        if closed:  # held back, or kept for the next session, when the 421 was settled
            continue
        replies = list(zip(message.kinds, message.replies))
        refused = next(((kind, code, text) for kind, (code, text) in replies if kind != "RSET" and code // 100 != 2),
                       None)
        if len(replies) == len(message.kinds) or (replies and replies[-1][1][0] == 421):
            try:
                # Its answer came before the break.
                closed = not _settle(lane, chunk, message, behind=window[position + 1:])
            except _OutOfTurn as wrong:
                _unanswered(lane, chunk, message, wrong)
        elif refused is not None:  # its MAIL or RCPT was refused: the server cannot have taken it
            kind, code, text = refused
            chunk.finish(message.index, _refused(message.envelope, code, text, blame_recipient=kind != "MAIL"))
        else:
            _unanswered(lane, chunk, message, broken)


def _unanswered(lane: Lane, chunk: Work, message: _InFlight, cause: Exception) -> None:
    """No reply that counts: uncertain once all of its group went out, else it goes again."""
    if chunk.settled(message.index):
        return
    if message.written:
        chunk.finish(message.index, _uncertain(message.envelope, cause))
    else:
        _go_again(lane, chunk, message, _broke(message.envelope, cause))


def _behind(lane: Lane, message: _InFlight) -> None:
    """A message the server never read, sent only because it was in the window: first on
    the next session, without counting as a try (each session settles at least the one ahead)."""
    lane._again.append(message.index)


def _go_again(lane: Lane, chunk: Work, message: _InFlight, otherwise: Result) -> None:
    """Nothing of the message was taken: first on the next session, once; else ``otherwise``."""
    if not lane._try_again(chunk, message.index):
        chunk.finish(message.index, otherwise)
