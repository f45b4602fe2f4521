"""Hand messages to an SMTP server over a few long-lived connections.

``send_many`` spreads a chunk over up to ``connections`` connections at once,
each driven by a thread of its own that lives as long as the transport. The
threads share one queue of work: ``send_many`` may be called again, from
another thread, before the last call is answered, and a connection done with
one call's messages goes on with the next one's rather than wait for the
slowest connection. Connections stay open between chunks and are replaced after
``messages_per_connection`` messages, after a 421, or when the server drops
them. On each, messages are streamed when the server offers PIPELINING and
CHUNKING (up to ``window`` messages in flight, none waiting for a round trip of
its own; see chunking.py), pipelined with DATA when it offers PIPELINING
only (one round trip a message instead of four; see pipelining.py), and sent
one command at a time otherwise.

Every outcome is a Result, never an exception:

- 2xx after the message: SENT, with the server's queue id when it gives one;
- 4xx, 421, a dropped line or a timeout: TEMPORARY; a 421 or a 4.7.x rate
  limit is also ``throttled``, and what is not yet started, of this call and
  of any other call waiting, is held back untried until this call returns
  (see ``Work`` in work.py);
- 5xx for the recipient or the message: PERMANENT, with the enhanced code;
- a line that broke after the message went out but before the answer came:
  TEMPORARY with ``uncertain=True`` (the server may have taken it);
- a connection that cannot be opened, secured or logged in to: TEMPORARY for
  every message it would have carried, with an error that says what to set.
  The recipients are not at fault, so none of them is failed for good.

TLS is verified by default, and a server that does not offer STARTTLS when it
is configured gets nothing: there is no silent fallback to plain text.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
from typing import Callable, Sequence

from newsletter.transports.base import Envelope, Result, Transport, TransportError
from newsletter.transports.smtp.chunking import WINDOW, Chunking
from newsletter.transports.smtp.pipelining import Lane
from newsletter.transports.smtp.replies import reply_text
from newsletter.transports.smtp.work import Pipelining, SetupFailed, Work

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")


class SmtpTransport(Transport):
    TRANSPORT = "smtp"  # its settings: the smtp group of config.py
    name = "smtp"
    concurrent_calls = True  # send_many may be called again before the last call returns
    withdraws = True  # asks may_hand_over before each message's MAIL FROM
    utf8_local_parts = True  # with SMTPUTF8 where the server offers it; where not, such a row is unsendable

    def __init__(
        self,
        host: str,
        port: int = 25,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        verify_certificates: bool = True,
        timeout: float = 30.0,
        connections: int = 4,
        messages_per_connection: int = 500,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
        chunking: bool = True,
        window: int = WINDOW,
    ):
        _check_settings(security, connections, messages_per_connection, timeout, window)
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self._ssl_context = ssl_context or _client_context(verify_certificates)
        # Looked up once: socket.getfqdn() can wait on DNS, and would per connection.
        self._local_hostname = local_hostname or socket.getfqdn()
        self.pipelining = Pipelining(pipelining, self.where)
        self.chunking = Chunking(chunking, window)
        self._lanes = [Lane(self._open_session, messages_per_connection, self.pipelining, self.chunking)
                       for _ in range(connections)]
        self._work = Work(connections)
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> SmtpTransport:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            verify_certificates=settings.smtp_verify_certificates,
            timeout=settings.smtp_timeout,
            connections=settings.smtp_connections,
            messages_per_connection=settings.smtp_messages_per_connection,
            pipelining=settings.smtp_pipelining,
            chunking=settings.smtp_chunking,
            window=settings.smtp_window,
        )

    @staticmethod
    def account_key(settings) -> str:
        """The relay login the shared rate limit is kept under."""
        s = settings
        return f"smtp:{s.smtp_username + '@' if s.smtp_username else ''}{s.smtp_host}:{s.smtp_port}"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- sending -------------------------------------------------------------
    def send_many(self, envelopes: Sequence[Envelope],
                  may_hand_over: Callable[[], bool] | None = None) -> list[Result]:
        if not envelopes:
            return []
        self._start_threads()
        chunk = self._work.add(envelopes, may_hand_over)
        while not chunk.done.wait(1.0):
            if not all(thread.is_alive() for thread in self._threads):
                raise TransportError(f"an SMTP connection thread for {self.where} stopped; see the log")
        return self._work.collect(chunk)

    def close(self) -> None:
        self._work.stop()
        for thread in self._threads:
            thread.join()
        for lane in self._lanes:
            lane.close()
        self._threads = []
        self._work = Work(len(self._lanes))

    def _start_threads(self) -> None:
        with self._start_lock:
            if self._threads:
                return
            for number, lane in enumerate(self._lanes, start=1):
                thread = threading.Thread(target=self._serve, args=(lane, self._work), daemon=True,
                                          name=f"smtp-connection-{number}")
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _serve(lane: Lane, work: Work) -> None:
        """One connection's thread: send whatever is waiting, until the transport closes."""
        failed_in = None
        try:
            while work.wait(failed_in):
                work.begin()
                try:
                    failure = lane.drain(work)
                finally:
                    work.end()
                failed_in = work.lane_failed(failure) if failure is not None else None
        except Exception:
            log.exception("an SMTP connection thread stopped")
            raise

    # -- opening a session ---------------------------------------------------
    def _open_session(self) -> smtplib.SMTP:
        """A connected, secured and logged-in session, or SetupFailed."""
        smtp = None
        try:
            smtp = self._connect()
            self._secure(smtp)
            self._log_in(smtp)
            return smtp
        except SetupFailed:
            _close_quietly(smtp)
            raise
        except ssl.SSLCertVerificationError as exc:
            _close_quietly(smtp)
            raise SetupFailed(
                f"the certificate of {self.where} cannot be verified ({exc.verify_message}): "
                "install the CA that signed it, or set SMTP_VERIFY_CERTIFICATES=false only on a network you trust"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            _close_quietly(smtp)
            answer = reply_text(exc.smtp_code, exc.smtp_error)
            raise SetupFailed(f"the server at {self.where} answered {answer}", exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(smtp)
            raise SetupFailed(f"cannot connect to {self.where}: {exc or type(exc).__name__}") from exc

    def _connect(self) -> smtplib.SMTP:
        options = dict(local_hostname=self._local_hostname, timeout=self.timeout)
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, context=self._ssl_context, **options)
        else:
            smtp = smtplib.SMTP(self.host, self.port, **options)
        # Pipelined commands are small writes behind large ones: Nagle's
        # algorithm would hold them until the server acknowledged the data.
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.ehlo_or_helo_if_needed()
        return smtp

    def _secure(self, smtp: smtplib.SMTP) -> None:
        if self.security != "starttls":
            return
        if not smtp.has_extn("starttls"):
            raise SetupFailed(
                f"the server at {self.where} does not offer STARTTLS, so nothing was sent in plain text: "
                "set SMTP_SECURITY=tls if it expects TLS from the first byte (often port 465), "
                "or SMTP_SECURITY=none only on a network you trust"
            )
        smtp.starttls(context=self._ssl_context)
        smtp.ehlo()

    def _log_in(self, smtp: smtplib.SMTP) -> None:
        if not self.username:
            return
        try:
            smtp.login(self.username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            raise SetupFailed(
                f"the server at {self.where} refused the login for {self.username!r} "
                f"({reply_text(exc.smtp_code, exc.smtp_error)}): check SMTP_USERNAME and SMTP_PASSWORD",
                exc.smtp_code,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise SetupFailed(
                f"the server at {self.where} does not offer AUTH on this connection: "
                "check SMTP_SECURITY (many servers offer AUTH only over TLS) or leave SMTP_USERNAME empty"
            ) from exc


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


def _client_context(verify_certificates: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify_certificates:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check_settings(security: str, connections: int, messages_per_connection: int, timeout: float,
                    window: int) -> None:
    if security not in SECURITY_MODES:
        raise TransportError(f"SMTP security {security!r}: expected one of {', '.join(SECURITY_MODES)}")
    if connections < 1:
        raise TransportError(f"SMTP connections {connections}: must be at least 1")
    if messages_per_connection < 1:
        raise TransportError(f"SMTP messages per connection {messages_per_connection}: must be at least 1")
    if timeout <= 0:
        raise TransportError(f"SMTP timeout {timeout}: must be more than 0 seconds")
    if window < 1:
        raise TransportError(f"SMTP window {window}: must be at least 1 message in flight per connection")
