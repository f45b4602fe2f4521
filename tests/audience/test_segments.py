"""Segments: every operator on SQLite and PostgreSQL, clear errors, and sends to them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from newsletter.sending import lifecycle, scheduling
from newsletter.audience import segments
from newsletter.errors import InputError, NotFound
from newsletter.store.models import Membership, MailingList, Subscriber, Suppression
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_send, states

LONDON_SUMMER = timezone(timedelta(hours=1))

# name, email, joined (UTC), custom fields, {list: membership status}
PEOPLE = [
    ("Ann", "Ann.Lee@Council.example.org", datetime(2023, 12, 31, 12, tzinfo=timezone.utc),
     {"organisation": "Stoke-on-Trent City Council", "role": "Editor"}, {"staff": "confirmed"}),
    ("Bob", "bob@press.example.com", datetime(2024, 1, 1, 10, tzinfo=timezone.utc),
     {"organisation": "Stoke Press", "job title": "Clerk"}, {"staff": "confirmed", "board": "confirmed"}),
    # Joined 23:30 UTC on 30 June: already 1 July in London, the publication's time zone.
    ("Cy", "cy@example.net", datetime(2024, 6, 30, 23, 30, tzinfo=timezone.utc),
     {"organisation": "stoke-on-trent city council", "role": ""}, {"board": "confirmed"}),
    ("Di", "di_100%@example.org", datetime(2024, 7, 2, tzinfo=timezone.utc), {}, {"all": "confirmed"}),
]


@pytest.fixture
def world(session):
    pub, everyone, issue = make_world(session, 0)
    lists = {"all": everyone}
    for slug in ("staff", "board"):
        lists[slug] = MailingList(publication_id=pub.id, slug=slug, name=slug.title(), description="")
        session.add(lists[slug])
    session.flush()
    for name, email, joined, attributes, memberships in PEOPLE:
        person = Subscriber(email=email, name=name, attributes=attributes, status="active", source="import",
                            created_at=joined)
        session.add(person)
        session.flush()
        for slug, status in memberships.items():
            session.add(Membership(list_id=lists[slug].id, subscriber_id=person.id, status=status))
    session.commit()
    return pub, lists, issue


def matching(session, pub, condition):
    where = segments.compile_condition(session, pub, condition)
    return sorted(session.scalars(select(Subscriber.name).where(where)))


@pytest.mark.parametrize("condition, names", [
    # text: is / is not ignore the case of A-Z; someone without the field "is not" anything
    ('organisation is "Stoke-on-Trent City Council"', ["Ann", "Cy"]),
    ('organisation is not "stoke-on-trent city council"', ["Bob", "Di"]),
    ('organisation contains "STOKE"', ["Ann", "Bob", "Cy"]),
    ('organisation starts with "stoke p"', ["Bob"]),
    ('organisation ends with "council"', ["Ann", "Cy"]),
    ("role is empty", ["Bob", "Cy", "Di"]),
    ("role is not empty", ["Ann"]),
    ('[job title] is "clerk"', ["Bob"]),
    # built-in text fields; email compares whatever the case it is written in
    ('name is "ann"', ["Ann"]),
    ('email is "ann.lee@council.EXAMPLE.org"', ["Ann"]),
    ('email ends with "@EXAMPLE.org"', ["Di"]),
    ('email contains "100%"', ["Di"]),  # % and _ are letters here, not wildcards
    ('email contains "_1"', ["Di"]),
    ('source is "import"', ["Ann", "Bob", "Cy", "Di"]),
    # dates are days in the publication's time zone (Europe/London)
    ("joined before 2024-01-01", ["Ann"]),
    ("joined on 2024-01-01", ["Bob"]),
    ("joined after 2024-06-30", ["Cy", "Di"]),
    ("joined on 2024-07-01", ["Cy"]),
    # lists (confirmed members), not, and, or, parentheses
    ("in list staff", ["Ann", "Bob"]),
    ("in list staff and not in list board", ["Ann"]),
    ("not in list staff or in list board", ["Bob", "Cy", "Di"]),
    ('in list board and (role is empty or name is "Nobody")', ["Bob", "Cy"]),
    ('NOT (organisation contains "stoke") AND joined after 2024-01-01', ["Di"]),
])
def test_every_operator(session, world, condition, names):
    pub, _, _ = world
    assert matching(session, pub, condition) == names


@pytest.mark.parametrize("condition, where, message, fix", [
    ('organisaton is "x"', "column 1", "unknown field 'organisaton'", "organisation"),
    ('organisation is Stoke', "column 17", "organisation is text, and Stoke is not quoted", 'organisation is "Stoke"'),
    ("joined after yesterday", "column 14", "joined is a date, and yesterday is not one", "YYYY-MM-DD"),
    ('joined after "2024-01-01"', "column 14", "joined is a date", "unquoted"),
    ("joined on 2024-02-30", "column 11", "2024-02-30 is not one", "YYYY-MM-DD"),
    ('joined contains "2024"', "column 1", "'contains' makes no sense for joined (a date)", "use before, after, on"),
    ("name after 2024-01-01", "column 1", "'after' makes no sense for name (text)", "use is, is not, contains"),
    ("in list trustees", "column 9", "gazette has no list 'trustees'", "all, board, staff"),
    ('name is "Ann" and', "column 18", "the condition stops too soon", "a field name"),
    ('name = "Ann"', "column 6", "= was not expected here", "expected an operator"),
    ("not bounced", "column 5", "bounced people are always left out", "remove that part"),
    ('in list staff and not Bounced', "column 23", "bounced people are always left out", "remove that part"),
    ('bounced is "yes"', "column 1", "bounced people are always left out", "remove that part"),
    ("", "condition", "the condition is empty", "joined after"),
])
def test_a_bad_condition_says_where_and_what_is_allowed(session, world, condition, where, message, fix):
    pub, _, _ = world
    with pytest.raises(InputError) as caught:
        segments.compile_condition(session, pub, condition)
    problem = caught.value.problems[0]
    assert where in problem.where
    assert message in problem.message
    assert fix in problem.fix


def test_a_segment_is_saved_counted_and_previewed(session, world):
    pub, lists, _ = world
    session.add(Suppression(email="bob@press.example.com", reason="complaint", source="test"))
    session.add(Subscriber(email="left@example.org", name="Left", status="unsubscribed", attributes={"organisation": "Stoke"}))
    segments.create_segment(session, "gazette", "stoke", '  organisation   contains "stoke"  ')

    segment = segments.get_segment(session, None, "stoke")
    shown = segments.segment_preview(session, segment)

    assert segment.condition == 'organisation contains "stoke"'
    # Bob is suppressed and Left unsubscribed (and on no list): neither counts.
    assert shown.count == 2
    assert [p.name for p in shown.sample] == ["Ann", "Cy"]
    assert [s.name for _, s in segments.list_segments(session)] == ["stoke"]


def test_a_segment_name_is_checked_and_a_bad_condition_is_not_saved(session, world):
    with pytest.raises(InputError, match="cannot name a segment"):
        segments.create_segment(session, "gazette", "Council Staff", "in list staff")
    with pytest.raises(InputError, match="no list 'trustees'"):
        segments.create_segment(session, "gazette", "trustees", "in list trustees")
    segments.create_segment(session, "gazette", "staff", "in list staff")
    with pytest.raises(InputError, match="already has a segment 'staff'"):
        segments.create_segment(session, "gazette", "staff", "in list board")
    with pytest.raises(NotFound, match="no segment 'trustees'"):
        segments.get_segment(session, None, "trustees")


def test_a_send_to_a_segment_reaches_exactly_the_people_it_matches(session, world, fast, monkeypatch):
    monkeypatch.setattr(lifecycle, "FREEZE_PAGE", 2)  # several keyset pages even for a few people
    pub, lists, issue = world
    segment = segments.create_segment(session, "gazette", "stoke", 'organisation contains "stoke"')
    send = scheduling.schedule_send(session, issue, [], None, segment=segment, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    run_send(session, fast, transport, send.id)

    assert sorted(transport.recipients()) == ["Ann.Lee@Council.example.org", "bob@press.example.com", "cy@example.net"]
    assert states(session, send.id) == {"sent": 3}


def test_a_send_to_several_lists_reaches_a_member_of_both_once(session, world, fast, monkeypatch):
    monkeypatch.setattr(lifecycle, "FREEZE_PAGE", 3)
    pub, lists, issue = world
    send = scheduling.schedule_send(session, issue, [lists["staff"], lists["board"]], None, batch_size=fast.batch_size)
    session.commit()
    transport = MemoryTransport()

    run_send(session, fast, transport, send.id)

    # Bob is on both lists: one copy.
    assert sorted(transport.recipients()) == ["Ann.Lee@Council.example.org", "bob@press.example.com", "cy@example.net"]


def test_a_segment_narrows_the_lists_and_the_audience_is_frozen_at_the_start(session, world, fast):
    pub, lists, issue = world
    segment = segments.create_segment(session, "gazette", "board-only", "not in list staff")
    send = scheduling.schedule_send(session, issue, [lists["board"], lists["all"]], None, segment=segment,
                                    batch_size=fast.batch_size)
    session.commit()
    batch_ids = lifecycle.claim_due_sends(session, fast)
    # After the freeze Cy joins staff (no longer matches) and Di leaves "all": the
    # first is still sent (frozen), the second is honoured (an unsubscribe).
    cy = session.scalar(select(Subscriber).where(Subscriber.name == "Cy"))
    session.add(Membership(list_id=lists["staff"].id, subscriber_id=cy.id, status="confirmed"))
    di = session.scalar(select(Subscriber).where(Subscriber.name == "Di"))
    session.execute(Membership.__table__.update().where(Membership.subscriber_id == di.id).values(status="unsubscribed"))
    session.commit()
    transport = MemoryTransport()
    from newsletter.sending import delivery

    deliverer = delivery.Deliverer(fast, transport)
    for batch_id in batch_ids:
        deliverer.deliver_batch(session, batch_id)

    assert transport.recipients() == ["cy@example.net"]
    assert states(session, send.id) == {"sent": 1, "skipped": 1}


def test_a_send_needs_an_audience_of_its_own_publication(session, world):
    pub, lists, issue = world
    with pytest.raises(InputError, match="a send needs an audience"):
        scheduling.schedule_send(session, issue, [], None)


def test_one_click_unsubscribe_from_a_send_to_several_lists_leaves_each_of_them(session, settings, world):
    from newsletter.audience.tokens import unsubscribe_url
    from newsletter.web import create_app

    pub, lists, issue = world
    send = scheduling.schedule_send(session, issue, [lists["staff"], lists["board"]], None)
    bob = session.scalar(select(Subscriber).where(Subscriber.name == "Bob"))
    session.commit()
    client = create_app(settings).test_client()

    response = client.post(unsubscribe_url(settings, send.id, bob.id).removeprefix(settings.base_url),
                           data={"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert "no more Staff or Board" in response.get_data(as_text=True)
    session.expire_all()
    assert set(session.scalars(select(Membership.status).where(Membership.subscriber_id == bob.id))) == {"unsubscribed"}


def test_a_provider_unsubscribe_event_leaves_each_list_of_the_send(session, fast, world):
    from newsletter.feedback import events
    from newsletter.store.models import Delivery
    from newsletter.feedback.events import Event

    pub, lists, issue = world
    send = scheduling.schedule_send(session, issue, [lists["staff"], lists["board"]], None, batch_size=fast.batch_size)
    session.commit()
    run_send(session, fast, MemoryTransport(), send.id)
    row = session.scalar(select(Delivery).where(Delivery.send_id == send.id, Delivery.email == "bob@press.example.com"))

    events.record_events(session, fast, [Event(source="test", key="u1", kind="unsubscribed", email="BOB@press.example.com",
                                               occurred_at=datetime.now(timezone.utc), delivery_id=row.id)])

    statuses = session.execute(select(Membership.list_id, Membership.status).where(Membership.subscriber_id == row.subscriber_id))
    assert dict(statuses.all()) == {lists["staff"].id: "unsubscribed", lists["board"].id: "unsubscribed"}


@pytest.mark.parametrize("list_slugs, condition, names", [
    # The segment's list is one of the send's: its own test of membership is enough.
    ([], "in list board", ["Bob", "Cy", "Eve"]),
    (["board", "all"], "in list board and organisation contains \"stoke\"", ["Bob", "Cy"]),
    # The segment's list is not one of the send's: both must hold.
    (["staff"], "in list board", ["Bob"]),
    (["all"], "in list board", []),
    # "or" and "not" require no list: the send's lists are asked for as well.
    ([], "in list board or in list staff", ["Ann", "Bob", "Cy", "Eve"]),
    (["staff"], "not in list board", ["Ann"]),
])
def test_an_audience_is_the_same_whether_or_not_its_segment_names_one_of_the_lists(session, world, list_slugs, condition, names):
    pub, lists, _ = world
    # Eve is confirmed on board only; Fay is unconfirmed on board and confirmed on staff.
    for name, on in (("Eve", {"board": "confirmed"}), ("Fay", {"board": "unconfirmed", "staff": "unsubscribed"})):
        person = Subscriber(email=f"{name.lower()}@example.org", name=name, attributes={}, status="active")
        session.add(person)
        session.flush()
        session.add_all(Membership(list_id=lists[slug].id, subscriber_id=person.id, status=status) for slug, status in on.items())
    session.commit()
    list_ids = [lists[slug].id for slug in list_slugs] or segments.publication_list_ids(session, pub)

    shown = segments.preview(session, pub, list_ids, condition)

    assert sorted(person.name for person in shown.sample) == names and shown.count == len(names)
