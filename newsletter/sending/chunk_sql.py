"""The statements a batch run executes for every chunk, built once per database.

A statement built with the ORM for each chunk costs SQLAlchemy about half a
millisecond of CPU before the database sees it (building it, then its cache
key). At a hundred messages a chunk, the handful a chunk runs were a tenth of
the CPU a send worker spends on a message (bench/deliver.py). These are built
once for each dialect and run with parameters; what they do is described where
they are run (delivery.py, records.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select, Update

from newsletter.store.clock import now_in
from newsletter.store.lookups import among_param
from newsletter.store.models import ACTIVE_ROW_STATES, Delivery, DeliveryState, Send

_deliveries = Delivery.__table__
_sends = Send.__table__


@dataclass(frozen=True)
class ChunkStatements:
    send_state: Select  # send_id: the send's state now
    mark_sending: Update  # ids, holder, by_transport, for_account: the rows still held, as "sending"; their ids
    lock_for_record: Select  # ids, holder: the held rows locked, with the database's time
    record_result: Update  # executemany, one row's values each (see records.record_results)
    count_for_error_budget: Update  # send_id, now, attempted, failed, window: the window's counts


def chunk_statements(session: Session) -> ChunkStatements:
    return _built_for(session.get_bind().dialect.name)


@cache
def _built_for(dialect: str) -> ChunkStatements:
    c = _deliveries.c
    now = now_in(dialect)
    held = (c.claimed_by == bindparam("holder"))
    restart = _sends.c.budget_attempts >= bindparam("window")
    return ChunkStatements(
        send_state=select(_sends.c.state).where(_sends.c.id == bindparam("send_id")),
        mark_sending=(
            update(_deliveries)
            .where(among_param(dialect, c.id, "ids"), held, c.state == DeliveryState.CLAIMED)
            .values(state=DeliveryState.SENDING, claimed_at=now, updated_at=now,
                    transport=bindparam("by_transport"), account=bindparam("for_account"))
            .returning(c.id)
        ),
        lock_for_record=(
            select(c.id, c.possible_duplicate, c.extra_copies, now)
            .where(among_param(dialect, c.id, "ids"), held, c.state.in_(ACTIVE_ROW_STATES))
            .order_by(c.id)  # the order every locker takes rows in, so none deadlock
            .with_for_update()
        ),
        record_result=update(_deliveries).where(c.id == bindparam("delivery_id")),
        count_for_error_budget=(
            update(_sends).where(_sends.c.id == bindparam("send_id"))
            .values(last_progress_at=bindparam("now", type_=_sends.c.last_progress_at.type),
                    budget_attempts=case((restart, bindparam("attempted")),
                                         else_=_sends.c.budget_attempts + bindparam("attempted")),
                    budget_failures=case((restart, bindparam("failed")),
                                         else_=_sends.c.budget_failures + bindparam("failed")))
            .returning(_sends.c.budget_attempts, _sends.c.budget_failures)
        ),
    )
