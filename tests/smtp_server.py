"""A real SMTP server on loopback for tests, that records what it receives.

Built on aiosmtpd's Controller: it listens on a free port of 127.0.0.1 in a
thread of its own and keeps every message it accepts in memory, byte for byte,
with the envelope and the number of the connection that carried it. Knobs make
it misbehave the way real servers do.

Use the fixture (import it into your test module so pytest finds it)::

    from tests.smtp_server import smtp_server  # noqa: F401  (a fixture)

    def test_it_arrives(smtp_server):
        transport = SmtpTransport(smtp_server.host, smtp_server.port, security="none")
        transport.send_many([...])
        assert smtp_server.messages[0].recipients == ["reader@example.org"]

or build one with the options you need::

    with SmtpTestServer(tls="starttls", users={"sender": "secret"}) as server:
        context = server.client_ssl_context()   # trusts the server's test CA
        ...

Options: ``tls`` is None (plain), "starttls" (offered, not required) or
"implicit" (TLS from the first byte); ``users`` maps login to password and
makes AUTH required; ``ca`` is a ``trustme.CA`` (a fresh one by default);
``smtputf8`` offers SMTPUTF8 (addresses beyond ASCII, RFC 6531).

Knobs, callable while the server runs:

- ``fail_next(count, reply, at)``: answer ``reply`` to the next ``count``
  messages at stage ``at`` ("mail", "rcpt" or "data"); a 421 reply also closes
  the connection, as real servers do.
- ``fail_for(seconds, reply, at)``: the same for a while.
- ``reject_recipients(*addresses)``: "550 5.1.1" at RCPT for those addresses.
- ``stop_failing()``: forget every failure and rejection set so far (the
  cause was fixed).
- ``drop_after_data(count)``: take the next ``count`` messages, then drop the
  connection instead of answering (the message is recorded with
  ``answered=False``).
- ``reply_delay``: seconds to wait before answering the end of DATA.
- ``hold(count)``: keep the next ``count`` messages waiting at the end of
  DATA, unanswered and not yet recorded, until ``release()``; ``held`` says
  how many wait now. A server that stops answering, for as long as a test
  needs, with no clock involved. A held client that hangs up is forgotten.
- ``hold_after(count)``: once ``count`` messages have been taken, every
  further one waits the same way until ``release()``: a send cannot finish
  while a test looks at it, however fast the machine is.
- ``hang_up()``: close every open session at once, without a reply.

What it saw: ``messages`` (list of ``ReceivedMessage``), ``connections`` (how
many sessions said EHLO or HELO), ``max_open_connections`` (most sessions open
at once), ``logins``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

STAGES = ("mail", "rcpt", "data")


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    recipients: list[str]
    data: bytes  # exactly what came between DATA and the final dot, unstuffed
    connection: int  # 1 for the first session that said hello, 2 for the next...
    queue_id: str  # what the server put in its "250 ... queued as" reply
    tls: bool
    login: str | None
    answered: bool = True  # False when the server dropped the line instead
    received_at: float = 0.0  # time.monotonic() when the server took it: rates are measured here


@dataclass
class _FailureRule:
    reply: str
    at: str
    remaining: int | None = None  # messages left to fail, or None when timed
    until: float | None = None  # time.monotonic() deadline, or None when counted

    def applies(self) -> bool:
        if self.remaining is not None:
            return self.remaining > 0
        return time.monotonic() < self.until

    def use(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP session that tells the handler when its line closes."""

    def connection_lost(self, error):
        self.event_handler.session_closed(self)
        super().connection_lost(error)


class _RecordingHandler:
    def __init__(self, users: dict[str, str] | None):
        self.users = users or {}
        self.lock = threading.Lock()
        self.messages: list[ReceivedMessage] = []
        self.logins: list[str] = []
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.rules: list[_FailureRule] = []
        self.rejected: dict[str, str] = {}
        self.drops_left = 0
        self.reply_delay = 0.0
        self.holds_left = 0
        self.hold_at: int | None = None  # hold every message once this many were taken
        self.held = 0
        self.gate: asyncio.Event | None = None  # made and opened on the server's loop
        self._numbers: dict[int, int] = {}  # id(session object) -> connection number
        self._sessions: dict[int, SMTP] = {}  # the sessions open now, by id

    # -- connections -----------------------------------------------------
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self._greeted(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self._greeted(server)
        session.host_name = hostname
        return f"250 {server.hostname}"

    def _greeted(self, server) -> None:
        # A second EHLO after STARTTLS is the same connection.
        with self.lock:
            if id(server) in self._numbers:
                return
            self.connections += 1
            self._numbers[id(server)] = self.connections
            self._sessions[id(server)] = server
            self.open_connections += 1
            self.max_open_connections = max(self.max_open_connections, self.open_connections)

    def session_closed(self, server) -> None:
        with self.lock:
            if self._numbers.pop(id(server), None) is not None:
                self.open_connections -= 1
            self._sessions.pop(id(server), None)

    async def hang_up(self) -> None:
        with self.lock:
            sessions = list(self._sessions.values())
        for server in sessions:
            if server.transport is not None:
                server.transport.close()
        while self.open_connections:  # connection_lost runs on a later turn of the loop
            await asyncio.sleep(0.001)

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode()
        ok = self.users.get(login) == auth_data.password.decode()
        if ok:
            with self.lock:
                self.logins.append(login)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    # -- transactions ----------------------------------------------------
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        failure = self._failure("mail", server)
        if failure:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            rejection = self.rejected.get(address.lower())
        if rejection:
            return rejection
        failure = self._failure("rcpt", server)
        if failure:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        await self._wait_if_held()
        failure = self._failure("data", server)
        if failure:
            return failure
        with self.lock:
            drop = self.drops_left > 0
            self.drops_left -= drop
        queue_id = self._record(server, session, envelope, answered=not drop)
        if drop:
            server.transport.abort()
            await asyncio.Event().wait()  # connection_lost cancels this task
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def _wait_if_held(self) -> None:
        with self.lock:
            counted = self.holds_left > 0
            self.holds_left -= counted
            hold = counted or (self.hold_at is not None and len(self.messages) >= self.hold_at)
        if not hold:
            return
        if self.gate is None:
            self.gate = asyncio.Event()
        gate = self.gate
        with self.lock:
            self.held += 1
        try:
            await gate.wait()  # a client that hangs up cancels this task
        finally:
            with self.lock:
                self.held -= 1

    def open_gate(self) -> None:
        with self.lock:
            self.holds_left = 0
            self.hold_at = None
        if self.gate is not None:
            self.gate.set()
            self.gate = None

    def _failure(self, stage: str, server) -> str | None:
        with self.lock:
            rule = next((r for r in self.rules if r.at == stage and r.applies()), None)
            if rule is None:
                return None
            rule.use()
        if rule.reply.startswith("421"):
            # The reply goes out first: close() flushes what was written.
            server.loop.call_soon(server.transport.close)
        return rule.reply

    def _record(self, server, session, envelope, answered: bool) -> str:
        with self.lock:
            queue_id = f"Q{len(self.messages) + 1:07d}"
            self.messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from,
                    recipients=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content),
                    connection=self._numbers.get(id(server), 0),
                    queue_id=queue_id,
                    tls=server.transport.get_extra_info("ssl_object") is not None,
                    login=session.auth_data,
                    answered=answered,
                    received_at=time.monotonic(),
                )
            )
        return queue_id


class _CountingController(Controller):
    def factory(self):
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpTestServer:
    """A recording SMTP server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        tls: str | None = None,
        users: dict[str, str] | None = None,
        ca: trustme.CA | None = None,
        server_name: str = "localhost",
        smtputf8: bool = False,
    ):
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls={tls!r}: expected None, 'starttls' or 'implicit'")
        self.host = "127.0.0.1"
        self.port = free_loopback_port()
        self.tls = tls
        self.ca = ca or trustme.CA()
        self._handler = _RecordingHandler(users)
        self._controller = _CountingController(
            self._handler, hostname=self.host, port=self.port, **self._smtp_options(tls, users, server_name),
            enable_SMTPUTF8=smtputf8,
        )

    def _smtp_options(self, tls, users, server_name) -> dict:
        options: dict = {"server_hostname": server_name, "ident": "test-smtp"}
        if tls:
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(server_name, self.host).configure_cert(server_context)
            options["ssl_context" if tls == "implicit" else "tls_context"] = server_context
        if users:
            options.update(authenticator=self._handler.authenticate, auth_required=True)
            # On a plain line AUTH must still be offered, or nothing could log in.
            options["auth_require_tls"] = tls is not None
        return options

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> SmtpTestServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's test CA (and nothing else)."""
        context = ssl.create_default_context(cafile=None, cadata=None)
        context.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode())
        return context

    # -- knobs ---------------------------------------------------------------
    def fail_next(self, count: int, reply: str = "451 4.3.0 Try again later", at: str = "data") -> None:
        self._add_rule(_FailureRule(reply, _stage(at), remaining=count))

    def fail_for(self, seconds: float, reply: str = "451 4.3.0 Try again later", at: str = "data") -> None:
        self._add_rule(_FailureRule(reply, _stage(at), until=time.monotonic() + seconds))

    def reject_recipients(self, *addresses: str, reply: str = "") -> None:
        with self._handler.lock:
            for address in addresses:
                self._handler.rejected[address.lower()] = (
                    reply or f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
                )

    def stop_failing(self) -> None:
        with self._handler.lock:
            self._handler.rules.clear()
            self._handler.rejected.clear()

    def drop_after_data(self, count: int = 1) -> None:
        with self._handler.lock:
            self._handler.drops_left += count

    def hold(self, count: int = 1) -> None:
        with self._handler.lock:
            self._handler.holds_left += count

    def hold_after(self, count: int) -> None:
        """Take ``count`` messages, then keep every further one waiting, until ``release()``."""
        with self._handler.lock:
            self._handler.hold_at = count

    def release(self) -> None:
        """Answer every held message (and hold no more)."""
        self._controller.loop.call_soon_threadsafe(self._handler.open_gate)

    @property
    def held(self) -> int:
        with self._handler.lock:
            return self._handler.held

    def hang_up(self) -> None:
        """Close every open session without a word, as servers do to idle ones."""
        done = asyncio.run_coroutine_threadsafe(self._handler.hang_up(), self._controller.loop)
        done.result(timeout=10)

    @property
    def reply_delay(self) -> float:
        return self._handler.reply_delay

    @reply_delay.setter
    def reply_delay(self, seconds: float) -> None:
        self._handler.reply_delay = seconds

    def _add_rule(self, rule: _FailureRule) -> None:
        with self._handler.lock:
            self._handler.rules.append(rule)

    # -- what it saw ---------------------------------------------------------
    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._handler.lock:
            return list(self._handler.messages)

    @property
    def connections(self) -> int:
        return self._handler.connections

    @property
    def open_connections(self) -> int:
        return self._handler.open_connections

    @property
    def max_open_connections(self) -> int:
        return self._handler.max_open_connections

    @property
    def logins(self) -> list[str]:
        with self._handler.lock:
            return list(self._handler.logins)

    def received_by(self, recipient: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if recipient in m.recipients]


def _stage(at: str) -> str:
    if at not in STAGES:
        raise ValueError(f"at={at!r}: expected one of {', '.join(STAGES)}")
    return at


@pytest.fixture
def smtp_server():
    """A plain (no TLS, no AUTH) recording SMTP server, stopped after the test."""
    with SmtpTestServer() as server:
        yield server
