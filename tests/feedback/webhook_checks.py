"""What every provider's webhook tests check after a request: the suppressions and
events it left, and that the same request again changes nothing."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from newsletter.store.db import session_scope
from newsletter.store.models import ProviderEvent, Suppression


def suppressed(settings) -> dict:
    with session_scope(settings) as session:
        return dict(session.execute(select(Suppression.email, Suppression.reason)).all())


def event_count(settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(ProviderEvent))


def lift_suppressions(settings) -> None:
    """What an operator does after a bounce they know was a mistake: a replay must not undo it."""
    with session_scope(settings) as session:
        session.execute(delete(Suppression))


def assert_replay_changes_nothing(settings, first, replay) -> None:
    """The same request again: 200, its events counted as duplicates, nothing applied again."""
    assert first.status_code == 200 and first.get_json()["recorded"] >= 1
    assert replay.status_code == 200
    assert replay.get_json() == {"recorded": 0, "duplicates": first.get_json()["recorded"]}
    assert suppressed(settings) == {}
