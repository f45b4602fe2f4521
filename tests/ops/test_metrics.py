"""/metrics: the numbers `newsletter ops status` shows, for Prometheus; closed
to anonymous scrapers when METRICS_TOKEN is set."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from newsletter.web import create_app
from tests.pipeline import Pipeline, status as cli_status
from tests.smtp_server import SmtpTestServer


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(settings, **headers):
    return create_app(settings).test_client().get("/metrics", headers=headers)


@pytest.mark.slow
def test_metrics_show_the_same_numbers_as_the_terminal(tmp_path, postgres_url, redis_url):
    with SmtpTestServer() as smtp:
        pipeline = Pipeline(tmp_path, postgres_url, redis_url, smtp, WORKER_HEARTBEAT_SECONDS=1)
        try:
            smtp.reject_recipients(pipeline.address(4), pipeline.address(9))
            send_id = pipeline.prepare(30)
            pipeline.start_worker()
            pipeline.start_beat()
            pipeline.wait_finished(send_id)
            pipeline.kill("beat")  # no more ticks: the queues hold still
            pipeline.wait_for(lambda: all(q["depth"] == 0 for q in cli_status(pipeline)["queues"]), what="empty queues")

            shown = cli_status(pipeline)
            response = scrape(pipeline.settings)
        finally:
            pipeline.stop_all()
    assert response.status_code == 200
    metrics = samples(response.get_data(as_text=True))
    send = next(s for s in shown["sends"] if s["send_id"] == send_id)
    sid = str(send_id)
    for state in ("sent", "failed", "skipped", "cancelled", "pending"):
        assert metrics[("newsletter_send_recipients", (("send_id", sid), ("state", state)))] == send[state]
    assert (send["sent"], send["failed"]) == (28, 2)
    assert metrics[("newsletter_send_bounce_rate", (("send_id", sid),))] == pytest.approx(send["bounce_rate"])
    assert metrics[("newsletter_send_progress_ratio", (("send_id", sid),))] == 1.0
    # Labelled by the transport and account that sent each ledger row.
    account = f"smtp:{smtp.host}:{smtp.port}"
    assert metrics[("newsletter_messages_total", (("account", account), ("outcome", "sent"), ("transport", "smtp")))] == 28
    assert metrics[("newsletter_messages_total", (("account", account), ("outcome", "failed"), ("transport", "smtp")))] == 2
    for queue in shown["queues"]:
        assert metrics[("newsletter_queue_depth", (("queue", queue["name"]),))] == queue["depth"]
    running = sum(1 for w in shown["workers"] if w["state"] == "running")
    assert metrics[("newsletter_workers", (("state", "running"),))] == running == 1
    # Every batch the worker ran was timed.
    assert metrics[("newsletter_batch_duration_seconds_count", ())] >= 2


def test_metrics_are_open_without_a_token(settings):
    response = scrape(settings)
    assert response.status_code == 200
    assert ("newsletter_queue_depth", (("queue", "send"),)) in samples(response.get_data(as_text=True))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic c2NyYXBlcjpzM2NyZXQ=", "s3cret-token"])
def test_with_a_token_set_metrics_refuse_anyone_without_it(settings, authorization):
    guarded = replace(settings, metrics_token="s3cret-token")
    headers = {"Authorization": authorization} if authorization else {}
    response = scrape(guarded, **headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"newsletter_" not in response.data


def test_with_a_token_set_metrics_answer_its_bearer(settings):
    guarded = replace(settings, metrics_token="s3cret-token")
    response = scrape(guarded, Authorization="Bearer s3cret-token")
    assert response.status_code == 200
    assert ("newsletter_workers", (("state", "running"),)) in samples(response.get_data(as_text=True))
