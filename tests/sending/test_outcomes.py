"""What each answer from a server means for its ledger row (sending/outcomes.py), without a database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from newsletter.config import settings_from
from newsletter.sending.outcomes import THROTTLED_TOO_LONG, Row, outcome
from newsletter.store.models import POLICY_REFUSAL
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Result

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(hours=6)  # the retry window's end
SETTINGS = settings_from({"RETRY_ATTEMPTS": "3", "RETRY_BASE_DELAY_SECONDS": "60",
                          "RATE_LIMIT_THROTTLE_SECONDS": "30"})


def decide(result: Result, *, attempts: int = 0, flagged: bool = False, extra: int = 0, window_end=LATER):
    return outcome(result, Row(7, attempts, flagged, extra, "<m@example.org>"), now=NOW, window_end=window_end,
                   settings=SETTINGS)


def test_a_message_the_server_took_is_sent_then():
    decided = decide(Result(7, SENT, provider_message_id="4XyZ", code=250))
    assert decided.values["state"] == "sent" and decided.values["sent_at"] == NOW
    assert decided.values["attempts"] == 1 and decided.values["provider_message_id"] == "4XyZ"
    assert decided.values["message_id"] == "<m@example.org>" and decided.values["claimed_by"] == ""
    assert (decided.counted_as, decided.against_budget, decided.suppress) == ("sent", False, False)


def test_a_temporary_failure_is_retried_after_a_backoff_then_given_up():
    first = decide(Result(7, TEMPORARY, code=451, error="451 try later"))
    assert first.values["state"] == "retry" and first.counted_as == "retry" and first.against_budget
    # The first retry is 60 s away, give or take half of it (jitter).
    assert NOW + timedelta(seconds=30) <= first.values["next_attempt_at"] <= NOW + timedelta(seconds=90)

    last = decide(Result(7, TEMPORARY, code=451, error="451 try later"), attempts=2)
    assert last.values["state"] == "failed" and last.counted_as == "failed"
    assert last.values["last_error"] == "gave up after 3 attempts: 451 try later"

    late = decide(Result(7, TEMPORARY, code=451, error="451"), window_end=NOW + timedelta(seconds=1))
    assert late.values["state"] == "failed"  # the next try would come after the retry window


def test_a_copy_the_server_may_have_taken_is_flagged_and_counted_when_it_goes_again():
    decided = decide(Result(7, TEMPORARY, error="the line broke after the data", uncertain=True), extra=1)
    assert decided.values["state"] == "retry"
    assert decided.values["possible_duplicate"] is True and decided.values["extra_copies"] == 2


def test_a_flag_another_worker_set_is_never_written_over():
    decided = decide(Result(7, SENT), flagged=True, extra=1)
    assert decided.values["possible_duplicate"] is True and decided.values["extra_copies"] == 1


def test_a_throttle_waits_without_using_an_attempt_or_the_error_budget():
    asked = decide(Result(7, TEMPORARY, code=421, error="421 slow down", throttled=True, retry_after=120), attempts=2)
    assert asked.values["state"] == "retry" and asked.values["attempts"] == 2
    assert asked.values["next_attempt_at"] == NOW + timedelta(seconds=120)
    assert (asked.counted_as, asked.against_budget) == ("throttled", False)

    unsaid = decide(Result(7, TEMPORARY, code=421, error="421", throttled=True))
    assert unsaid.values["next_attempt_at"] == NOW + timedelta(seconds=30)  # RATE_LIMIT_THROTTLE_SECONDS


def test_a_throttle_that_outlasts_the_retry_window_fails_the_row_with_the_reason():
    decided = decide(Result(7, TEMPORARY, code=421, error="421 slow down", throttled=True), attempts=1, window_end=NOW)
    assert decided.values["state"] == "failed" and decided.values["attempts"] == 1
    assert decided.values["last_error"] == f"{THROTTLED_TOO_LONG}: 421 slow down"
    assert (decided.counted_as, decided.against_budget, decided.suppress) == ("expired", False, False)


@pytest.mark.parametrize("enhanced, suppressed", [("5.1.1", True), ("5.2.2", False), ("", False)])
def test_a_permanent_failure_fails_the_row_and_only_an_unknown_address_is_suppressed(enhanced, suppressed):
    decided = decide(Result(7, PERMANENT, code=550, enhanced_code=enhanced, error="550 no"))
    assert decided.values["state"] == "failed" and decided.counted_as == "failed" and decided.against_budget
    assert decided.suppress is suppressed


def test_a_policy_refusal_fails_the_row_says_why_and_never_suppresses_the_person():
    decided = decide(Result(7, PERMANENT, code=550, enhanced_code="5.7.1", error="550 5.7.1 rejected as spam"))
    assert decided.values["state"] == "failed" and not decided.suppress
    assert decided.values["last_error"] == f"{POLICY_REFUSAL}: 550 5.7.1 rejected as spam"


def test_an_address_that_can_never_go_this_way_fails_without_counting_against_the_send():
    decided = decide(Result(7, PERMANENT, enhanced_code="5.6.7", error="unsendable: no SMTPUTF8", unsendable=True))
    assert decided.values["state"] == "failed"
    assert (decided.counted_as, decided.against_budget, decided.suppress) == ("unsendable", False, False)


def test_a_long_reply_is_cut_to_what_the_ledger_keeps():
    decided = decide(Result(7, PERMANENT, code=550, error="x" * 5000))
    assert len(decided.values["last_error"]) == 2000
