"""How a batch run holds the ledger rows it claimed, and how others know it
has stopped holding them.

A run takes a lease (one row of ``claim_leases``) in the transaction that
claims its rows, and stamps the rows with its holder name,
``host:pid:nonce/run``. While the run makes progress, a thread renews the
lease every third of ``CLAIM_LEASE_SECONDS``; the run also renews it before
each chunk, and gives its rows up if it finds the lease lapsed. A lapsed lease
is never revived. When the run ends, the lease is dropped.

Rows whose holder has no valid lease belong to nobody: the next worker that
claims their batch takes them over, whatever host the holder ran on. So a
killed process, a host that vanished, or a run that raised and could not give
its rows back, costs at most one lease. On this host a holder whose process
is gone is known at once, by its pid.

A run that makes no progress for ``CLAIM_TIMEOUT_SECONDS`` (a server that
stopped answering) stops renewing, so a live but stuck worker loses its rows
too. Every later state change it makes is conditional on still holding the
row, so it never records over the new holder, and the rows it had handed to
the transport are flagged ``possible_duplicate`` by whoever takes them over.

Leases are taken, renewed and judged by the database's clock
(newsletter/store/clock.py), inside the SQL that does it: a host whose clock
is wrong can neither take rows from a live worker nor keep rows it lost.
A run also knows, without asking the database, until when its lease holds at
the least (``holds``): the transport asks before it hands over each message
(``may_hand_over``), so a run that lost its lease stops handing over at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from functools import cache
from datetime import datetime, timedelta

from sqlalchemy import Float, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.store.clock import later_in, later_sql, now_in, now_sql
from newsletter.store.db import session_scope
from newsletter.store.models import ClaimLease, Delivery

log = logging.getLogger(__name__)

KEPT_AFTER_EXPIRY = timedelta(days=1)
# What a run allows for between reading its own clock and the database
# extending its lease: it stops handing over this much before the lease lapses.
MARGIN = 0.1  # lapsed leases are kept a while, for ops to read

_process: tuple[int, str] | None = None


def process_identity() -> str:
    """``host:pid:nonce`` of this process, made on first use in each process.

    Not at import time: a Celery pool imports the tasks and then forks its
    children, and each child must have a name of its own. The nonce tells a
    process from an earlier one that had the same pid.
    """
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:
        _process = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _process[1]


def holder_is_gone(holder: str) -> bool:
    """True when ``holder`` ran on this host in a process that no longer exists.

    Another host's holders, and this process's own, are judged by their lease.
    """
    parts = holder.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


def live_holders(now):
    """The holders whose lease is still valid at ``now`` (a time, or the SQL of the
    database's clock: ``store.clock.now_sql``), as a subquery."""
    return select(ClaimLease.holder).where(ClaimLease.expires_at >= now)


def unheld(now):
    """SQL: the ledger row's holder has no valid lease (or never had one)."""
    return Delivery.claimed_by.not_in(live_holders(now))


@cache
def _renewal(dialect: str):
    """Lease.renew's statement by the database's clock, built once per dialect."""
    leases = ClaimLease.__table__
    return (
        update(leases)
        .where(leases.c.holder == bindparam("lease_holder"), leases.c.expires_at >= now_in(dialect))
        .values(expires_at=later_in(dialect, bindparam("seconds", type_=Float())))
    )


class Lease:
    """One batch run's claim on its ledger rows; see the module docstring."""

    def __init__(self, settings: Settings, holder: str, batch_id: int):
        self.settings = settings
        self.holder = holder
        self.batch_id = batch_id
        self._touched = time.monotonic()
        self._valid_until = self._touched + settings.claim_lease_seconds - MARGIN  # monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def take(cls, session: Session, settings: Settings, batch_id: int, identity: str,
             now: datetime | None = None) -> Lease:
        """Add the lease to ``session``'s transaction: commit it with the claim.
        ``now``: the database's clock unless given."""
        lease = cls(settings, f"{identity}/{uuid.uuid4().hex[:8]}", batch_id)
        host, _, rest = identity.partition(":")
        pid = rest.split(":", 1)[0]
        session.execute(
            insert(ClaimLease).values(
                holder=lease.holder, hostname=host, pid=int(pid) if pid.isdigit() else 0, batch_id=batch_id,
                taken_at=now_sql(session, now), expires_at=later_sql(session, settings.claim_lease_seconds, now),
            )
        )
        forgotten = later_sql(session, -KEPT_AFTER_EXPIRY.total_seconds(), now)
        session.execute(delete(ClaimLease).where(ClaimLease.expires_at < forgotten))
        return lease

    def progressed(self) -> None:
        """The run moved on (a chunk began or came back): keep renewing."""
        self._touched = time.monotonic()

    def renew(self, session: Session) -> bool:
        """Extend the lease, by the database's clock; False if it had already
        lapsed (it stays lapsed)."""
        asked = time.monotonic()
        renewed = session.execute(_renewal(session.get_bind().dialect.name),
                                  {"lease_holder": self.holder, "seconds": self.settings.claim_lease_seconds})
        renewed = renewed.rowcount == 1
        if renewed:  # the database's new expiry is at least this far from when it was asked
            self._valid_until = max(self._valid_until, asked + self.settings.claim_lease_seconds - MARGIN)
        else:
            self._valid_until = 0.0
        return renewed

    def holds(self) -> bool:
        """Whether the lease still holds, by what this run knows without asking:
        never True once the database would let another run take the rows."""
        return time.monotonic() < self._valid_until

    def may_hand_over(self) -> bool:
        """Asked by the transport before it hands over each message: the run is
        moving (it keeps renewing), and may go on only while its lease holds."""
        self.progressed()
        return self.holds()

    def drop(self, session: Session) -> None:
        """End the lease: whatever the run still holds can be taken over at once."""
        session.execute(delete(ClaimLease).where(ClaimLease.holder == self.holder))

    # --- the heartbeat ------------------------------------------------------------

    def keep_alive(self) -> None:
        """Renew from a thread while the run makes progress, until ``stop()``."""
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{self.holder}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.claim_lease_seconds + 10)

    def _renew_until_stopped(self) -> None:
        interval = max(self.settings.claim_lease_seconds / 3, 0.2)
        while not self._stop.wait(interval):
            idle = time.monotonic() - self._touched
            if idle > self.settings.claim_timeout_seconds:
                log.warning(
                    "batch %s made no progress for %.0fs: its claim lapses and another worker takes its rows over",
                    self.batch_id, idle, extra={"batch_id": self.batch_id},
                )
                return
            try:
                with session_scope(self.settings) as session:
                    if not self.renew(session):
                        return  # lapsed: the run gives its rows up at its next chunk
            except Exception:  # noqa: BLE001 - the database may be restarting; try again next beat
                log.warning("could not renew the claim of batch %s", self.batch_id, exc_info=True,
                            extra={"batch_id": self.batch_id})
