"""Queue depth over time, sampled by the beat tick for the dashboard's chart."""

from datetime import timedelta

from sqlalchemy import select

from newsletter.ops.queue_history import record_queue_depths
from newsletter.store.models import QueueSample, utcnow
from tests.ops_world import Broker


class BrokenBroker:
    def queue_stats(self, names):
        raise ConnectionError("broker down")


def samples(session):
    return list(session.scalars(select(QueueSample).order_by(QueueSample.at)))


def test_a_sample_a_minute_at_most_and_a_day_kept(session, settings):
    now = utcnow()
    assert record_queue_depths(session, settings, now - timedelta(days=2), broker=Broker(send=9))
    assert record_queue_depths(session, settings, now, broker=Broker(send=40, control=2))
    assert not record_queue_depths(session, settings, now + timedelta(seconds=30), broker=Broker(send=1))
    session.flush()
    kept = samples(session)
    assert [(s.depth, s.depths) for s in kept] == [(42, {"control": 2, "send": 40})]


def test_a_broker_that_cannot_be_read_costs_a_sample_not_the_tick(session, settings):
    assert not record_queue_depths(session, settings, utcnow(), broker=BrokenBroker())
    assert samples(session) == []


def test_the_embedded_broker_folder_is_sampled(session, settings):
    from newsletter.ops.broker import embedded_queue_folder

    assert record_queue_depths(session, settings, utcnow())  # no folder yet: empty queues
    assert samples(session)[0].depth == 0
    assert not embedded_queue_folder(settings).exists() or samples(session)[0].depths
