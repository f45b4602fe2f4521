"""A real Transport that keeps messages in memory and can be told to fail."""

from __future__ import annotations

import threading
from email import message_from_bytes, policy

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport


class MemoryTransport(Transport):
    name = "memory"

    def __init__(self):
        self.accepted: list[Envelope] = []
        self.temporary: dict[str, int] = {}  # recipient -> failures still to give
        self.permanent: dict[str, tuple[int, str, str]] = {}  # recipient -> (code, enhanced, text)
        self.uncertain: set[str] = set()  # recipients whose first attempt breaks after DATA
        self.calls = 0
        self.on_send = None  # called with each chunk before it is handled
        self._lock = threading.Lock()

    def send_many(self, envelopes):
        with self._lock:
            self.calls += 1
            if self.on_send:
                self.on_send(envelopes)
            return [self._one(e) for e in envelopes]

    def _one(self, envelope: Envelope) -> Result:
        rcpt = envelope.recipient
        if rcpt in self.permanent:
            code, enhanced, text = self.permanent[rcpt]
            return Result(envelope.delivery_id, PERMANENT, code=code, enhanced_code=enhanced, error=f"{code} {enhanced} {text}")
        if self.temporary.get(rcpt, 0) > 0:
            self.temporary[rcpt] -= 1
            return Result(envelope.delivery_id, TEMPORARY, code=451, enhanced_code="4.3.0", error="451 4.3.0 try again later")
        if rcpt in self.uncertain:
            self.uncertain.discard(rcpt)
            self.accepted.append(envelope)  # the server took it; we never heard
            return Result(envelope.delivery_id, TEMPORARY, error="connection lost after DATA", uncertain=True)
        self.accepted.append(envelope)
        return Result(envelope.delivery_id, SENT, provider_message_id=f"q{len(self.accepted)}", code=250)

    def recipients(self) -> list[str]:
        return [e.recipient for e in self.accepted]

    def parsed(self):
        return [message_from_bytes(e.message, policy=policy.default) for e in self.accepted]
