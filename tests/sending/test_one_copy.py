"""One copy of an issue per person, across all the issue's sends, whatever lists
they go to; another copy only when the operator asks for a resend. On SQLite and
PostgreSQL (the ``session`` fixture runs each test on both)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from newsletter.errors import InputError
from newsletter.sending import scheduling, send_record
from newsletter.store.models import Delivery, MailingList, Membership, SendEvent, Subscriber
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send, states


@pytest.fixture
def world(session):
    """reader000..005 on "all"; reader004..007 on "staff" (004 and 005 on both)."""
    pub, everyone, issue = make_world(session, 6)
    staff = MailingList(publication_id=pub.id, slug="staff", name="Staff", description="")
    session.add(staff)
    session.flush()
    for i in range(4, 8):
        person = session.scalar(select(Subscriber).where(Subscriber.email == f"reader{i:03d}@example.com"))
        if person is None:
            person = Subscriber(email=f"reader{i:03d}@example.com", name=f"Reader {i}", status="active", attributes={})
            session.add(person)
            session.flush()
        session.add(Membership(list_id=staff.id, subscriber_id=person.id, status="confirmed"))
    session.commit()
    return pub, everyone, staff, issue


def readers(*numbers):
    return [f"reader{n:03d}@example.com" for n in numbers]


def started_line(session, send_id):
    return session.scalar(select(SendEvent.detail).where(SendEvent.send_id == send_id, SendEvent.kind == "started"))


def test_a_send_to_two_overlapping_lists_gives_each_person_one_copy(session, world, fast):
    _pub, everyone, staff, issue = world
    scheduled = scheduling.schedule_issue(session, fast, issue, [everyone, staff], None)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, scheduled.send.id)

    assert sorted(transport.recipients()) == readers(*range(8))
    assert scheduled.audience == 8 and scheduled.already_had == 0


def test_scheduling_the_issue_again_to_an_overlapping_list_reaches_only_the_new_people(session, world, fast):
    _pub, everyone, staff, issue = world
    first = scheduling.schedule_issue(session, fast, issue, [everyone], None)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, first.send.id)
    assert sorted(transport.recipients()) == readers(0, 1, 2, 3, 4, 5)

    second = scheduling.schedule_issue(session, fast, issue, [staff], None)
    session.commit()
    # Said when it is scheduled, and again when it starts.
    assert (second.audience, second.already_had) == (4, 2)
    assert "2 of its 4 recipients already had this issue" in second.already_had_words("--resend")
    assert "--resend" in second.already_had_words("--resend")
    later = MemoryTransport()
    run_send(session, fast, later, second.send.id)

    assert sorted(later.recipients()) == readers(6, 7)
    assert states(session, second.send.id) == {"sent": 2}
    assert "2 who already had this issue from an earlier send are left out" in started_line(session, second.send.id)


def test_a_resend_sends_again_to_everyone_and_marks_the_extra_copies(session, world, fast):
    _pub, everyone, staff, issue = world
    first = scheduling.schedule_issue(session, fast, issue, [everyone], None)
    session.commit()
    run_send(session, fast, MemoryTransport(), first.send.id)

    again = scheduling.schedule_issue(session, fast, issue, [staff], None, resend=True)
    session.commit()
    assert (again.audience, again.already_had) == (4, 2)
    assert "get it again" in again.already_had_words("--resend")
    transport = MemoryTransport()
    run_send(session, fast, transport, again.send.id)

    assert sorted(transport.recipients()) == readers(4, 5, 6, 7)
    marked = dict(session.execute(select(Delivery.email, Delivery.resend).where(Delivery.send_id == again.send.id)).all())
    assert marked == {**dict.fromkeys(readers(4, 5), True), **dict.fromkeys(readers(6, 7), False)}
    assert "2 of them already had this issue and get it again" in started_line(session, again.send.id)

    # The two new people took their copy with the resend: a third send leaves everyone out.
    third = scheduling.schedule_issue(session, fast, issue, [everyone, staff], None)
    session.commit()
    assert third.already_had == 8
    run_send(session, fast, MemoryTransport(), third.send.id)
    assert states(session, third.send.id) == {}


def test_people_a_cancelled_send_never_reached_get_the_issue_from_the_next(session, world, fast):
    _pub, everyone, _staff, issue = world
    first = scheduling.schedule_issue(session, fast, issue, [everyone], None)
    session.commit()
    from newsletter.sending import lifecycle

    lifecycle.claim_due_sends(session, fast)  # frozen, nothing sent yet
    scheduling.cancel(session, first.send.id)
    session.commit()

    second = scheduling.schedule_issue(session, fast, issue, [everyone], None)
    session.commit()
    assert second.already_had == 0
    transport = MemoryTransport()
    run_send(session, fast, transport, second.send.id)
    assert sorted(transport.recipients()) == readers(*range(6))


def test_the_ledger_itself_refuses_a_second_copy_of_an_issue(session, world, fast):
    """Whatever the code in front of it does: the database keeps one row per issue and person."""
    _pub, everyone, staff, issue = world
    first = scheduling.schedule_issue(session, fast, issue, [everyone], None)
    second = scheduling.schedule_issue(session, fast, issue, [staff], None)
    session.commit()
    person = session.scalar(select(Subscriber.id).where(Subscriber.email == readers(4)[0]))
    session.add(Delivery(send_id=first.send.id, issue_id=issue.id, subscriber_id=person, email=readers(4)[0]))
    session.commit()
    session.add(Delivery(send_id=second.send.id, issue_id=issue.id, subscriber_id=person, email=readers(4)[0]))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    # An explicit resend stands outside the rule.
    session.add(Delivery(send_id=second.send.id, issue_id=issue.id, subscriber_id=person, email=readers(4)[0], resend=True))
    session.commit()


def test_a_send_to_several_lists_names_the_publication_in_its_list_id(session, world, fast):
    _pub, everyone, staff, issue = world
    both = scheduling.schedule_issue(session, fast, issue, [everyone, staff], None)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, both.send.id)
    assert {m["List-Id"] for m in transport.parsed()} == {"The Gazette <gazette.gazette.example.org>"}

    one = scheduling.schedule_issue(session, fast, issue, [staff], None, resend=True)
    session.commit()
    transport = MemoryTransport()
    run_send(session, fast, transport, one.send.id)
    assert {m["List-Id"] for m in transport.parsed()} == {'"The Gazette: Staff" <staff.gazette.gazette.example.org>'}
    assert send_record.list_labels(session, [both.send.id, one.send.id]) == {both.send.id: "all, staff", one.send.id: "staff"}


def test_schedule_issue_refuses_links_subscribers_could_not_follow_unless_allowed(session, world, fast):
    from dataclasses import replace

    _pub, everyone, _staff, issue = world
    over_smtp = replace(fast, transport="smtp", base_url="http://127.0.0.1:8000")
    with pytest.raises(InputError, match="--allow-private-links"):
        scheduling.schedule_issue(session, over_smtp, issue, [everyone], None)
    with pytest.raises(InputError, match="tick the box"):
        scheduling.schedule_issue(session, over_smtp, issue, [everyone], None, how_to_allow="tick the box")
    assert scheduling.schedule_issue(session, over_smtp, issue, [everyone], None, allow_private_links=True).send.id


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite lets one writer in at a time
def test_a_send_freezing_while_another_send_of_the_issue_freezes_starts_at_the_next_tick(session, world, fast, caplog):
    """Two beats at once: one is freezing "all" (not committed yet) while the
    other freezes "staff", which shares two people with it. The second waits on
    the first's rows, is refused by the database once they commit, and stays
    scheduled; its tick goes on; the next tick starts it with the other two."""
    import threading
    import time
    from datetime import timedelta

    from sqlalchemy import text, update

    from newsletter.sending import lifecycle
    from newsletter.store.db import session_scope
    from newsletter.store.models import Send, utcnow

    _pub, everyone, staff, issue = world
    first = scheduling.schedule_issue(session, fast, issue, [everyone], None).send.id
    second = scheduling.schedule_issue(session, fast, issue, [staff], None).send.id
    due = utcnow() - timedelta(minutes=1)
    session.execute(update(Send).where(Send.id == second).values(scheduled_at=due - timedelta(seconds=1)))
    session.execute(update(Send).where(Send.id == first).values(scheduled_at=due))
    session.commit()

    with session_scope(fast) as beat_one:  # the first beat, mid-claim: "all" frozen, not committed
        beat_one.execute(update(Send).where(Send.id == first).values(state="sending"))
        lifecycle.freeze_audience(beat_one, first)
        pid = beat_one.scalar(text("SELECT pg_backend_pid()"))
        started: list = []
        failed: list = []
        second_pid: list = []

        def beat_two():
            try:
                with session_scope(fast) as own:
                    second_pid.append(own.scalar(text("SELECT pg_backend_pid()")))
                    started.extend(lifecycle.claim_due_sends(own, fast))
            except Exception as exc:  # noqa: BLE001 - what the test asserts on
                failed.append(exc)

        other = threading.Thread(target=beat_two)
        other.start()
        for _ in range(1000):  # until the second beat waits on the first's rows
            with session_scope(fast) as look:
                if second_pid and look.scalar(text("SELECT :first = ANY(pg_blocking_pids(:second))"),
                                              {"first": pid, "second": second_pid[0]}):
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the second beat never waited on the first")
    other.join(timeout=30)  # the first beat has committed

    assert failed == [] and started == []  # its tick went on; it started nothing
    session.expire_all()
    assert session.get(Send, second).state == "scheduled"
    assert "another send of its issue was taking some of the same people" in caplog.text
    assert states(session, second) == {}

    lifecycle.tick(session, fast)  # the next tick
    assert session.get(Send, second).state == "sending"
    assert "2 who already had this issue from an earlier send are left out" in started_line(session, second)
    frozen = session.scalars(select(Delivery.email).where(Delivery.send_id == second).order_by(Delivery.email)).all()
    assert frozen == readers(6, 7)
