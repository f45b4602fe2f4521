"""An operator's host whose clock is wrong neither delays nor hastens a send:
"now" in scheduling, send now, resume and retry-failed is the database's
clock, the one the beat judges due sends and rows by. On SQLite and PostgreSQL;
time_machine moves this process's clock only, never the database's."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select, update

from newsletter.sending import lifecycle, scheduling
from newsletter.store import clock
from newsletter.store.models import Delivery, Send
from newsletter.store.models import POLICY_REFUSAL
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send, states

AN_HOUR = timedelta(hours=1)


@pytest.fixture
def world(session):
    _pub, lst, issue = make_world(session, 6)
    session.commit()
    return lst, issue


def fast_host(session):
    """This host's clock an hour ahead of the database's."""
    return time_machine.travel(clock.read(session) + AN_HOUR, tick=True)


def test_scheduling_for_now_on_a_fast_host_starts_at_the_next_tick(session, world, fast):
    lst, issue = world
    with fast_host(session):
        send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
        session.commit()
    lifecycle.tick(session, fast)
    assert session.get(Send, send.id).state == "sending"


def test_send_now_on_a_fast_host_starts_at_the_next_tick(session, world, fast):
    lst, issue = world
    send = scheduling.schedule_send(session, issue, lst, clock.read(session) + timedelta(days=1))
    session.commit()
    with fast_host(session):
        scheduling.send_now(session, send.id)
        session.commit()
    lifecycle.tick(session, fast)
    assert session.get(Send, send.id).state == "sending"


def failed(session, send_id, *emails, error):
    session.execute(update(Delivery).where(Delivery.send_id == send_id, Delivery.email.in_(emails))
                    .values(state="failed", last_error=error))
    session.commit()


def test_resume_and_retry_failed_on_a_fast_host_send_at_once(session, world, fast):
    lst, issue = world
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=fast.batch_size)
    session.commit()
    run_send(session, fast, MemoryTransport(), send.id)
    assert states(session, send.id) == {"sent": 6}

    # Two rows the server refused for a cause the operator has since fixed, one that timed out.
    failed(session, send.id, "reader000@example.com", "reader001@example.com", error=f"{POLICY_REFUSAL}: 550 5.7.1")
    failed(session, send.id, "reader002@example.com", error="timed out")
    session.execute(update(Send).where(Send.id == send.id).values(state="paused"))
    session.commit()
    with fast_host(session):
        scheduling.resume(session, send.id)
        session.commit()
    again = MemoryTransport()
    run_send(session, fast, again, send.id, rounds=3)
    assert sorted(again.recipients()) == ["reader000@example.com", "reader001@example.com"]

    with fast_host(session):
        assert scheduling.retry_failed(session, send.id) == 1
        session.commit()
    again = MemoryTransport()
    run_send(session, fast, again, send.id, rounds=3)
    assert again.recipients() == ["reader002@example.com"]
    assert states(session, send.id) == {"sent": 6}
    stamps = session.execute(select(Send.updated_at, Send.last_progress_at).where(Send.id == send.id)).one()
    assert all(stamp <= clock.read(session) for stamp in stamps)  # no time from the fast host
