"""The one interface every way of handing over mail implements.

A transport takes a chunk of ready-made messages and answers, for each one,
whether it was accepted, failed for now (worth a retry) or failed for good.
It never raises for a single recipient's failure; whether a failure is worth
a retry is said by the status, not left to the caller to guess. When the
server says to slow down (``Result.throttled``), the transport sends no more
of the chunk: the rest come back throttled too, untried.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

# Envelope is made with the other message types (MessageTemplate, Recipient);
# every transport takes it, so importers of this interface find it here too.
from newsletter.authoring.message import Envelope

SENT = "sent"
TEMPORARY = "temporary"  # 4xx, throttling, connection trouble: retry later
PERMANENT = "permanent"  # 5xx: never retry


@dataclass(frozen=True)
class Result:
    delivery_id: int
    status: str  # SENT | TEMPORARY | PERMANENT
    provider_message_id: str = ""
    code: int | None = None  # SMTP reply code or HTTP status
    enhanced_code: str = ""  # "5.1.1"
    error: str = ""
    # True when the server may have taken the message although we saw no
    # answer (the connection broke after the data went out). A retry of such a
    # row is recorded as a possible duplicate.
    uncertain: bool = False
    # The server or provider said to slow down (SMTP 421, 4.7.x rate limits,
    # HTTP 429, SES Throttling): TEMPORARY, the account's fault, not the
    # recipient's. ``retry_after``: the seconds it asked for, when it said.
    throttled: bool = False
    retry_after: float | None = None
    # Not tried: held back, untried, after a throttle met by another message
    # (``not_tried``). Such a row only waits; the throttle is told once, by
    # the answer that was the throttle.
    held_back: bool = False
    # Not tried: withdrawn before it was handed over, because the caller said
    # it may hand over no more (``send_many``'s ``may_hand_over``).
    withdrawn: bool = False
    # PERMANENT because the address can never go this way (a local part
    # beyond ASCII and no SMTPUTF8): the row fails, but says nothing about the
    # send's health, so it is not held against the send's error budget.
    unsendable: bool = False

    @classmethod
    def withdrawn_from(cls, envelope: Envelope) -> Result:
        """The Result for an envelope withdrawn, untried, when the caller may hand over no more."""
        return cls(envelope.delivery_id, TEMPORARY, error="not sent: withdrawn before it was handed over",
                   withdrawn=True)

    def not_tried(self, envelope: Envelope) -> Result:
        """The Result for an envelope held back, untried, after this throttle."""
        return Result(envelope.delivery_id, TEMPORARY, code=self.code, enhanced_code=self.enhanced_code,
                      error=f"not sent yet, the server asked to slow down: {self.error}"[:2000],
                      throttled=True, retry_after=self.retry_after, held_back=True)

    @property
    def policy_refusal(self) -> bool:
        """A permanent failure that refuses the sender or the content (5.7.x: authentication,
        reputation, spam), not the address: the recipient is not at fault."""
        return self.status == PERMANENT and self.enhanced_code.startswith("5.7.")

    @property
    def hard_bounce(self) -> bool:
        """A permanent failure that says the address does not exist (5.1.x)."""
        return self.status == PERMANENT and self.enhanced_code.startswith("5.1.")


class TransportError(Exception):
    """The transport as a whole cannot work (bad configuration, bad credentials)."""


class Transport(ABC):
    name: str = "transport"
    # How many envelopes one send_many call is best given (a provider's batch
    # size); 0: no preference, the sender decides.
    preferred_chunk: int = 0
    # True when send_many may be called again, from another thread, before the
    # last call returns (the sender then hands over the next chunk early).
    concurrent_calls: bool = False
    # True when send_many takes ``may_hand_over``: a callable it asks before it
    # hands over each message; once it says False, the messages not yet handed
    # over come back withdrawn (``Result.withdrawn``), untried.
    withdraws: bool = False
    # True when it can carry an address whose local part is not ASCII
    # (``jörg@example.org``: SMTPUTF8, RFC 6531), given a server that offers it.
    utf8_local_parts: bool = False

    @abstractmethod
    def send_many(self, envelopes: Sequence[Envelope]) -> list[Result]:
        """Hand over every envelope; return one Result per envelope, in order."""

    def close(self) -> None:
        """Release connections. The transport may be used again afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
