"""How many messages a worker has out at once over SMTP: 25 a connection, and no more than so many bytes."""

from __future__ import annotations

from types import SimpleNamespace

from newsletter.sending.delivery import Deliverer


def lane(connections: int, preferred_chunk: int = 0, burst: int = 0):
    return SimpleNamespace(transport=SimpleNamespace(preferred_chunk=preferred_chunk),
                           settings=SimpleNamespace(smtp_connections=connections),
                           limiter=SimpleNamespace(burst=burst))


def test_a_chunk_is_25_messages_a_connection_while_they_are_small():
    assert Deliverer.chunk_size(lane(4), message_bytes=72 * 1024) == 100
    assert Deliverer.chunk_size(lane(20), message_bytes=2_000) == 500


def test_many_connections_of_large_messages_hold_no_more_than_the_byte_cap():
    size = Deliverer.chunk_size(lane(20), message_bytes=72 * 1024)
    assert size < 500
    assert size * 72 * 1024 <= Deliverer.CHUNK_BYTES
    assert Deliverer.chunk_size(lane(20), message_bytes=50 * 1024 * 1024) == 10  # never fewer than 10


def test_a_providers_batch_and_a_rate_limits_burst_still_decide():
    assert Deliverer.chunk_size(lane(20, preferred_chunk=1000), message_bytes=72 * 1024) == 1000
    assert Deliverer.chunk_size(lane(20, burst=14), message_bytes=72 * 1024) == 14
