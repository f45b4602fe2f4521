"""Hand messages to an SMTP server over a few long-lived connections.

Over a real network each message costs about four round trips (MAIL, RCPT,
DATA, the message), so one connection carries only a dozen messages a second
at 20 ms from the server. ``send_many`` therefore spreads a chunk over up to
``connections`` connections at once, each driven by a thread of a small pool
that lives as long as the transport. Connections stay open between chunks and
are replaced after ``messages_per_connection`` messages, after a 421, or when
the server drops them.

Every outcome is a Result, never an exception:

- 2xx after the message: SENT, with the server's queue id when it gives one;
- 4xx, 421, a dropped line or a timeout: TEMPORARY;
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
import queue
import re
import smtplib
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")

# Where common servers put their queue id in the final 250 reply.
_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([\w.@-]+)", re.IGNORECASE),  # Postfix and many more
    re.compile(r"\bid=([\w.-]+)", re.IGNORECASE),  # Exim
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?([\w.-]+) Message accepted", re.IGNORECASE),  # Sendmail
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?OK\s+\d+\s+([\w.-]+) - gsmtp"),  # Gmail
    re.compile(r"^Ok\s+([\w-]{20,})$"),  # Amazon SES
)
_ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class SmtpTransport(Transport):
    name = "smtp"

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
    ):
        _check_settings(security, connections, messages_per_connection, timeout)
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self._ssl_context = ssl_context or _client_context(verify_certificates)
        # Looked up once: socket.getfqdn() can wait on DNS, and would per connection.
        self._local_hostname = local_hostname or socket.getfqdn()
        self._lanes = [_Connection(self._open_session, messages_per_connection) for _ in range(connections)]
        self._pool: ThreadPoolExecutor | None = None

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
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- sending -------------------------------------------------------------
    def send_many(self, envelopes: Sequence[Envelope]) -> list[Result]:
        envelopes = list(envelopes)
        results: list[Result | None] = [None] * len(envelopes)
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(envelopes)):
            pending.put(index)
        lanes = self._lanes[: len(envelopes)]

        def drain(lane: _Connection) -> _SetupFailed | None:
            return _drain(lane, envelopes, pending, results)

        if len(lanes) <= 1:
            failures = [drain(lane) for lane in lanes]
        else:
            failures = list(self._threads().map(drain, lanes))
        return _fill_unsent(envelopes, results, failures)

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self._lanes), thread_name_prefix="smtp-connection")
        return self._pool

    # -- opening a session ---------------------------------------------------
    def _open_session(self) -> smtplib.SMTP:
        """A connected, secured and logged-in session, or _SetupFailed."""
        smtp = None
        try:
            smtp = self._connect()
            self._secure(smtp)
            self._log_in(smtp)
            return smtp
        except _SetupFailed:
            _close_quietly(smtp)
            raise
        except ssl.SSLCertVerificationError as exc:
            _close_quietly(smtp)
            raise _SetupFailed(
                f"the certificate of {self.where} cannot be verified ({exc.verify_message}): "
                "install the CA that signed it, or set SMTP_VERIFY_CERTIFICATES=false only on a network you trust"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            _close_quietly(smtp)
            answer = _reply_text(exc.smtp_code, exc.smtp_error)
            raise _SetupFailed(f"the server at {self.where} answered {answer}", exc.smtp_code) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(smtp)
            raise _SetupFailed(f"cannot connect to {self.where}: {exc or type(exc).__name__}") from exc

    def _connect(self) -> smtplib.SMTP:
        options = dict(local_hostname=self._local_hostname, timeout=self.timeout)
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, context=self._ssl_context, **options)
        else:
            smtp = smtplib.SMTP(self.host, self.port, **options)
        smtp.ehlo_or_helo_if_needed()
        return smtp

    def _secure(self, smtp: smtplib.SMTP) -> None:
        if self.security != "starttls":
            return
        if not smtp.has_extn("starttls"):
            raise _SetupFailed(
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
            raise _SetupFailed(
                f"the server at {self.where} refused the login for {self.username!r} "
                f"({_reply_text(exc.smtp_code, exc.smtp_error)}): check SMTP_USERNAME and SMTP_PASSWORD",
                exc.smtp_code,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise _SetupFailed(
                f"the server at {self.where} does not offer AUTH on this connection: "
                "check SMTP_SECURITY (many servers offer AUTH only over TLS) or leave SMTP_USERNAME empty"
            ) from exc


class _SetupFailed(Exception):
    """A session could not be opened, secured or logged in to: nothing was sent."""

    def __init__(self, error: str, code: int | None = None):
        super().__init__(error)
        self.error = error
        self.code = code

    def result_for(self, envelope: Envelope) -> Result:
        return Result(envelope.delivery_id, TEMPORARY, code=self.code, error=self.error)


class _Connection:
    """One SMTP session, opened when needed and reused for up to ``limit`` messages.

    Used by one thread at a time: ``send_many`` gives each lane to one worker.
    """

    def __init__(self, open_session: Callable[[], smtplib.SMTP], limit: int):
        self._open_session = open_session
        self._limit = limit
        self._smtp: smtplib.SMTP | None = None
        self._used = 0
        self._stage = "commands"  # how far the current transaction got

    def deliver(self, envelope: Envelope) -> Result:
        """One message's outcome; raises _SetupFailed when no session could be had."""
        reused = self._smtp is not None
        result, nothing_sent = self._attempt(envelope)
        if nothing_sent and reused:
            # A session idle since the last chunk may have been closed by the
            # server. None of this message was taken, so one fresh try is safe.
            result, _ = self._attempt(envelope)
        return result

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
            self._used = 0
        return self._smtp

    def _attempt(self, envelope: Envelope) -> tuple[Result, bool]:
        smtp = self._session()
        self._used += 1
        try:
            result = self._transaction(smtp, envelope)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._discard()
            return _dropped(envelope, self._stage, exc), self._stage == "commands"
        if result.code == 421:
            self._discard()  # the server is closing this session
        elif result.status != SENT:
            self._reset()
        if self._smtp is not None and self._used >= self._limit:
            self.close()
        return result, False

    def _transaction(self, smtp: smtplib.SMTP, envelope: Envelope) -> Result:
        self._stage = "commands"
        options = _mail_options(smtp, envelope)
        if options is None:
            return _unsendable_address(envelope)
        code, reply = smtp.mail(envelope.sender, options)
        if code != 250:
            return _refused(envelope, code, reply, blame_recipient=False)
        code, reply = smtp.rcpt(envelope.recipient)
        if code not in (250, 251):
            return _refused(envelope, code, reply)
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            return _refused(envelope, code, reply)
        self._stage = "data"
        smtp.send(_dot_stuffed(envelope.message))
        self._stage = "reply"
        code, reply = smtp.getreply()
        if 200 <= code < 300:
            return Result(envelope.delivery_id, SENT, provider_message_id=_queue_id(reply), code=code)
        return _refused(envelope, code, reply)

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._discard()

    def _discard(self) -> None:
        _close_quietly(self._smtp)
        self._smtp = None


def _drain(lane: _Connection, envelopes, pending: queue.SimpleQueue, results: list) -> _SetupFailed | None:
    """Send envelopes from ``pending`` over one lane until none are left.

    A lane that cannot open a session gives its envelope back for the other
    lanes and stops, rather than wait out a connect timeout per message.
    """
    while True:
        try:
            index = pending.get_nowait()
        except queue.Empty:
            return None
        try:
            results[index] = lane.deliver(envelopes[index])
        except _SetupFailed as failure:
            log.warning("SMTP session failed: %s", failure.error)
            pending.put(index)
            return failure


def _fill_unsent(envelopes, results: list, failures: list) -> list[Result]:
    """Envelopes no lane could take fail for now, with the reason a lane gave."""
    failure = next((f for f in failures if f is not None), None)
    return [r if r is not None else failure.result_for(e) for e, r in zip(envelopes, results)]


def _mail_options(smtp: smtplib.SMTP, envelope: Envelope) -> list[str] | None:
    """MAIL FROM parameters, or None when the server cannot take these addresses."""
    options = []
    if smtp.has_extn("size"):
        options.append(f"SIZE={len(envelope.message)}")
    if smtp.has_extn("8bitmime") and not envelope.message.isascii():
        options.append("BODY=8BITMIME")
    if not (envelope.sender + envelope.recipient).isascii():
        if not smtp.has_extn("smtputf8"):
            return None
        options.append("SMTPUTF8")
    return options


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: leading dots doubled, ended by a lone dot (RFC 5321 4.5.2)."""
    # Not re.sub(rb"(?m)^\.", ...): the same result, but the regex walked all
    # 60 KB of a newsletter and cost a third of a worker's time.
    data = message.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _refused(envelope: Envelope, code: int, reply: bytes, blame_recipient: bool = True) -> Result:
    text = _decode(reply)
    enhanced = _enhanced_code(code, text)
    error = _reply_text(code, reply)
    if not blame_recipient:
        # A refused sender is our configuration, not the subscriber's address.
        return Result(envelope.delivery_id, TEMPORARY, code=code, enhanced_code=enhanced,
                      error=f"the server refused the sender {envelope.sender}: {error}")
    status = PERMANENT if 500 <= code < 600 else TEMPORARY
    return Result(envelope.delivery_id, status, code=code, enhanced_code=enhanced, error=error)


def _unsendable_address(envelope: Envelope) -> Result:
    return Result(envelope.delivery_id, PERMANENT, enhanced_code="5.6.7",
                  error="the address is not plain ASCII and the server does not offer SMTPUTF8")


def _dropped(envelope: Envelope, stage: str, exc: Exception) -> Result:
    if stage == "reply":
        return Result(envelope.delivery_id, TEMPORARY, uncertain=True,
                      error=f"the connection broke after the message was sent, before the server answered; "
                            f"it may have been delivered ({exc})")
    return Result(envelope.delivery_id, TEMPORARY, error=f"the connection broke: {exc or type(exc).__name__}")


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


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply if isinstance(reply, str) else _decode(reply)
    return f"{code} {' '.join(text.split())}"


def _decode(reply: bytes) -> str:
    return reply.decode("utf-8", errors="replace")


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


def _check_settings(security: str, connections: int, messages_per_connection: int, timeout: float) -> None:
    if security not in SECURITY_MODES:
        raise TransportError(f"SMTP security {security!r}: expected one of {', '.join(SECURITY_MODES)}")
    if connections < 1:
        raise TransportError(f"SMTP connections {connections}: must be at least 1")
    if messages_per_connection < 1:
        raise TransportError(f"SMTP messages per connection {messages_per_connection}: must be at least 1")
    if timeout <= 0:
        raise TransportError(f"SMTP timeout {timeout}: must be more than 0 seconds")
