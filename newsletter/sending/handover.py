"""Handing a run's chunks to the transport, and their answers to the ledger, in order.

Takes in chunks of envelopes, each for rows the run has marked ``sending``;
hands on each chunk's answers, oldest first, to the record (``records.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial

from newsletter.sending.claims import Claimed
from newsletter.sending.leases import Lease
from newsletter.transports.base import Envelope, Result, Transport

# Records one chunk's answers: the chunk, its envelopes, the transport's results, the rows that could not be built.
Record = Callable[[list[Claimed], list[Envelope], list[Result], list[Result]], None]


class HandOver:
    """The chunks of one run at the transport, recorded in the order they went out.

    A transport that takes a call while another is out (``concurrent_calls``:
    SMTP, whose connections share one queue of work) is given the next chunk as
    soon as it is ready, before the last one is answered: its connections go
    from one chunk to the next without waiting for the slowest, and the ledger
    work of one chunk is done while the other is on the wire. Any other
    transport is called and recorded a chunk at a time.
    """

    def __init__(self, transport: Transport, lease: Lease, calls: Callable[[], Executor], record: Record):
        self._transport = transport  # the lane's: the send's publication's transport
        self._lease = lease
        self._calls = calls  # the pool a transport that takes concurrent calls is called in
        self._record = record  # records one chunk's answers in the ledger
        self._ahead = 1 if transport.concurrent_calls else 0
        self._out: deque = deque()  # (chunk, envelopes, unbuildable, future of the results)

    def send(self, chunk: list[Claimed], envelopes: list[Envelope], unbuildable: list[Result]) -> None:
        call = self._transport.send_many
        if self._transport.withdraws and envelopes:
            # Asked before each message goes out: a run that lost its lease hands over no more.
            call = partial(self._transport.send_many, may_hand_over=self._lease.may_hand_over)
        if self._ahead and envelopes:
            results = self._calls().submit(call, envelopes)
        else:
            results = Future()
            results.set_result(call(envelopes) if envelopes else [])
        self._out.append((chunk, envelopes, unbuildable, results))
        self.record(keep=self._ahead)

    def record_answered(self) -> int:
        """Record, without waiting, the chunks out (oldest first) that are answered; how many.
        A call that failed is left for ``record``, where the failure stops the run as before."""
        recorded = 0
        while self._out and self._out[0][3].done() and self._out[0][3].exception() is None:
            self.record(keep=len(self._out) - 1)
            recorded += 1
        return recorded

    def record(self, keep: int = 0) -> None:
        """Record the answers of all but the ``keep`` newest chunks out, waiting for them."""
        while len(self._out) > keep:
            chunk, envelopes, unbuildable, results = self._out.popleft()
            answers = results.result()
            self._lease.progressed()
            self._record(chunk, envelopes, answers, unbuildable)

    def wait(self) -> None:
        """After a failure: let what is out finish (its rows stay in doubt, and are given back as such)."""
        for _, _, _, results in self._out:
            try:
                results.result()
            except Exception:  # noqa: BLE001 - the failure that got here is the one to report
                pass
        self._out.clear()
