"""A small SMTP server on loopback that announces PIPELINING and misbehaves on cue.

For the faults a real server cannot be told to commit inside a pipelined
group. It reads what the client sends, runs every complete command in it, and
answers after each read, as a pipelining server does (RFC 2920 lets it hold
replies until the group ends). Options, fixed when it is made:

- ``hold_replies``: answer RSET, MAIL and RCPT only with the DATA that ends
  their group, and the final dot of a message only once the next command
  arrives (except for the ``expected``-th message, the last): a client that
  waited for each reply would wait forever, so a send that finishes proves the
  client pipelined;
- ``reject``: addresses refused at RCPT with 550 5.1.1;
- ``rcpt_limit``: recipients a session takes; the next get "452 4.5.3 too many
  recipients" (as Postfix's smtpd_recipient_limit, here per session);
- ``drop_after_dot``: numbers of messages (1 = the first received) after whose
  final dot the line is dropped without a reply;
- ``mail_421``: numbers of MAIL commands (1 = the first received) answered
  "421", then the line is closed;
- ``final_421``: numbers of messages answered "421" after their final dot,
  then the line is closed (the message is not taken);
- ``ssl_context``: a server context for TLS from the first byte (implicit TLS);
- ``out_of_turn``: a group that arrives in one read (MAIL, RCPT and DATA
  together) is answered in reverse order, 354 first; commands sent one at a
  time are answered properly. With ``chunking``, MAIL, RCPT and BDAT in one
  read are answered in reverse order, the BDAT's reply first;
- ``chunking``: announce CHUNKING and take ``BDAT <size> [LAST]`` (RFC 3030);
  a BDAT with no accepted recipient has its data read and refused (554). With
  ``hold_replies``, no reply at all goes out until the ``expected``-th message
  has arrived: a client that waited for any reply before sending the next
  message would wait forever, so a send that finishes proves messages were
  streamed. ``drop_after_dot`` and ``final_421`` count a message's last chunk
  as its final dot.

What it saw: ``messages`` (accepted or not, with ``answered`` and
``accepted``), ``connections``, ``verbs`` (every command, in order),
``groups`` (the commands answered together,
when more than one: those of one read, or with ``hold_replies`` those of one
group however they arrived).
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScriptedMessage:
    number: int  # 1 for the first message received
    mail_from: str
    recipients: list[str]
    data: bytes  # unstuffed, CRLF line endings, without the final dot
    connection: int
    accepted: bool  # answered 250
    answered: bool  # any reply went out


@dataclass
class _Session:
    number: int
    mail_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    accepted_recipients: int = 0  # over the whole session, for rcpt_limit
    held: list[bytes] = field(default_factory=list)  # replies not sent yet (hold_replies) ...
    held_verbs: list[str] = field(default_factory=list)  # ... and the commands they answer
    closing: bool = False  # a 421 went out: no more commands are read
    chunks: list[bytes] = field(default_factory=list)  # BDAT data of the message being received


class ScriptedSmtpServer:
    def __init__(self, *, pipelining: bool = True, hold_replies: bool = False, expected: int = 0,
                 reject: tuple[str, ...] = (), rcpt_limit: int | None = None, drop_after_dot: tuple[int, ...] = (),
                 mail_421: tuple[int, ...] = (), final_421: tuple[int, ...] = (), out_of_turn: bool = False,
                 chunking: bool = False, ssl_context: ssl.SSLContext | None = None):
        self.host = "127.0.0.1"
        self.pipelining = pipelining
        self.hold_replies = hold_replies
        self.expected = expected
        self.reject = {a.lower() for a in reject}
        self.rcpt_limit = rcpt_limit
        self.drop_after_dot = set(drop_after_dot)
        self.mail_421 = set(mail_421)
        self.final_421 = set(final_421)
        self.mail_commands = 0
        self.out_of_turn = out_of_turn
        self.chunking = chunking
        self.verbs: list[str] = []
        self.ssl_context = ssl_context
        self.messages: list[ScriptedMessage] = []
        self.groups: list[list[str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []

    def __enter__(self) -> ScriptedSmtpServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                _close(conn)
        for thread in self._threads:
            thread.join(timeout=30)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    # -- one session ---------------------------------------------------------
    def _serve(self, conn: socket.socket, number: int) -> None:
        session = _Session(number)
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            reader = _Lines(conn)
            conn.sendall(b"220 scripted.example.net ESMTP\r\n")
            while True:
                lines = reader.read_commands()
                if lines is None:
                    return
                verbs = [line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode(errors="replace") for line in lines]
                with self._lock:
                    self.verbs.extend(verbs)
                replies = []
                for line, verb in zip(lines, verbs):
                    replies.append(self._command(session, line, verb))
                    if session.closing:
                        conn.sendall(b"".join(session.held + replies))
                        _hang_up(conn)
                        return
                if verbs[-1] == "BDAT":
                    if not self._bdat(conn, session, reader, lines[-1], verbs, replies):
                        return
                    continue
                if self.out_of_turn and verbs[-3:] == ["MAIL", "RCPT", "DATA"]:
                    replies[-3:] = reversed(replies[-3:])
                    self._answer(conn, session, verbs, replies)
                    self._receive_data(session, reader, conn)
                    continue
                if self.hold_replies and verbs[-1] not in ("DATA", "QUIT", "EHLO", "HELO"):
                    session.held.extend(replies)
                    session.held_verbs.extend(verbs)
                    continue
                self._answer(conn, session, verbs, replies)
                if verbs[-1] == "DATA" and replies[-1].startswith(b"354"):
                    if not self._receive_data(session, reader, conn):
                        return
                if verbs[-1] == "QUIT":
                    return
        except OSError:
            return
        finally:
            _close(conn)

    def _bdat(self, conn: socket.socket, session: _Session, reader, line: bytes, verbs: list[str],
              replies: list[bytes]) -> bool:
        """Read a BDAT's chunk and answer the commands of this read; False when the line is dropped."""
        words = line.split()
        size, last = int(words[1]), len(words) > 2 and words[2].upper() == b"LAST"
        data = reader.read_chunk(size)
        if data is None:
            return False
        session.chunks.append(data)
        if not last:
            replies[-1] = b"250 2.0.0 Ok: %d bytes\r\n" % size
        elif not session.recipients:
            session.mail_from, session.chunks = None, []
            replies[-1] = b"554 5.5.1 Error: no valid recipients\r\n"
        else:
            replies[-1] = self._receive_message(session, b"".join(session.chunks))
            session.chunks = []
            if replies[-1] is None:
                conn.sendall(b"".join(session.held + replies[:-1]))
                conn.shutdown(socket.SHUT_RDWR)
                return False
        if self.out_of_turn and verbs[-3:] == ["MAIL", "RCPT", "BDAT"]:
            replies[-3:] = reversed(replies[-3:])
        if replies[-1].startswith(b"421"):
            conn.sendall(b"".join(session.held + replies))
            _hang_up(conn)
            return False
        if self.hold_replies and len(self.messages) < self.expected:
            session.held.extend(replies)
            session.held_verbs.extend(verbs)
            return True
        self._answer(conn, session, verbs, replies)
        return True

    def _receive_message(self, session: _Session, data: bytes) -> bytes | None:
        """Note a message that arrived whole; its reply, or None to drop the line."""
        with self._lock:
            number = len(self.messages) + 1
            drop, refuse = number in self.drop_after_dot, number in self.final_421
            self.messages.append(ScriptedMessage(number, session.mail_from, list(session.recipients), data,
                                                 session.number, accepted=not (drop or refuse), answered=not drop))
        session.mail_from, session.recipients = None, []
        if drop:
            return None
        if refuse:
            return b"421 4.3.0 scripted.example.net Service shutting down, closing connection\r\n"
        return f"250 2.0.0 Ok: queued as S{number:05d}\r\n".encode()

    def _answer(self, conn: socket.socket, session: _Session, verbs: list[str], replies: list[bytes]) -> None:
        """Send the held replies and these; note the commands answered together."""
        answered = session.held_verbs + verbs
        if len(answered) > 1:
            with self._lock:
                self.groups.append(answered)
        conn.sendall(b"".join(session.held + replies))
        session.held.clear()
        session.held_verbs.clear()

    def _command(self, session: _Session, line: bytes, verb: str) -> bytes:
        argument = line.partition(b":")[2].strip().decode("utf-8", errors="replace")
        if verb in ("EHLO", "HELO"):
            extensions = (["PIPELINING"] if self.pipelining else []) + (["CHUNKING"] if self.chunking else [])
            return "".join(f"250-{e}\r\n" for e in ["scripted.example.net", *extensions, "8BITMIME"]).encode() \
                + b"250 SIZE 100000000\r\n"
        if verb == "BDAT":
            return b""  # answered once its chunk is read
        if verb == "RSET":
            session.mail_from, session.recipients, session.chunks = None, [], []
            return b"250 2.0.0 Ok\r\n"
        if verb == "MAIL":
            with self._lock:
                self.mail_commands += 1
                closing = self.mail_commands in self.mail_421
            if closing:
                session.closing = True
                return b"421 4.7.0 scripted.example.net Error: too many messages, closing connection\r\n"
            if session.mail_from is not None:
                return b"503 5.5.1 Error: nested MAIL command\r\n"
            session.mail_from = argument.split(" ")[0].strip("<>")
            return b"250 2.1.0 Ok\r\n"
        if verb == "RCPT":
            address = argument.strip("<>")
            if session.mail_from is None:
                return b"503 5.5.1 Error: need MAIL command\r\n"
            if address.lower() in self.reject:
                return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown\r\n".encode()
            if self.rcpt_limit is not None and session.accepted_recipients >= self.rcpt_limit:
                return b"452 4.5.3 Error: too many recipients\r\n"
            session.recipients.append(address)
            session.accepted_recipients += 1
            return b"250 2.1.5 Ok\r\n"
        if verb == "DATA":
            if not session.recipients:
                return b"554 5.5.1 Error: no valid recipients\r\n"
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == "QUIT":
            return b"221 2.0.0 Bye\r\n"
        if verb == "NOOP":
            return b"250 2.0.0 Ok\r\n"
        return b"502 5.5.2 Error: command not recognized\r\n"

    def _receive_data(self, session: _Session, reader, conn: socket.socket) -> bool:
        """Read a message up to its final dot and answer it; False when the line is dropped."""
        data = reader.read_data()
        if data is None:
            return False
        with self._lock:
            number = len(self.messages) + 1
        drop, refuse = number in self.drop_after_dot, number in self.final_421
        message = ScriptedMessage(number, session.mail_from, list(session.recipients), data, session.number,
                                  accepted=not (drop or refuse), answered=not drop)
        with self._lock:
            self.messages.append(message)
        session.mail_from, session.recipients = None, []
        if drop:
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if refuse:
            conn.sendall(b"421 4.3.0 scripted.example.net Service shutting down, closing connection\r\n")
            _hang_up(conn)
            return False
        reply = f"250 2.0.0 Ok: queued as S{number:05d}\r\n".encode()
        if self.hold_replies and number != self.expected:
            session.held.append(reply)  # until the next command comes in
        else:
            conn.sendall(reply)
        return True

    def received_by(self, recipient: str) -> list[ScriptedMessage]:
        return [m for m in self.messages if recipient in m.recipients]


class _Lines:
    """Lines from a socket; ``read_commands`` gives those of one read."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.conn.recv(256 * 1024)
        self.buffer += chunk
        return bool(chunk)

    def read_commands(self) -> list[bytes] | None:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                return None
        complete, _, self.buffer = self.buffer.rpartition(b"\r\n")
        lines = complete.split(b"\r\n")
        # Commands after a DATA belong to after its message: keep them unread.
        for position, line in enumerate(lines):
            ends_read = line.upper() == b"DATA" or line[:5].upper() == b"BDAT "  # data follows
            if ends_read and position + 1 < len(lines):
                self.buffer = b"\r\n".join(lines[position + 1:]) + b"\r\n" + self.buffer
                return lines[: position + 1]
        return lines

    def read_chunk(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_data(self) -> bytes | None:
        while True:
            if self.buffer.startswith(b".\r\n"):  # an empty message
                self.buffer = self.buffer[3:]
                return b""
            end = self.buffer.find(b"\r\n.\r\n")
            if end >= 0:
                raw, self.buffer = self.buffer[: end + 2], self.buffer[end + 5:]
                lines = raw.split(b"\r\n")
                return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
            if not self._fill():
                return None


def _hang_up(conn: socket.socket) -> None:
    """Close after a 421 as a server does: the reply is read before the line goes,
    whatever the client sent behind it (unread data would reset the line at once)."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(10)
        while conn.recv(256 * 1024):
            pass
    except OSError:
        pass


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass
