"""Prometheus metrics, computed from the database and the broker at scrape time.

Workers are separate processes, so nothing is counted in memory here: each
scrape reads the same snapshot as ``newsletter ops status`` (``ops.status``)
plus the ledger's totals, and the numbers always agree with the terminal.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.ops.broker import BrokerView
from newsletter.ops.status import Status, collect_status
from newsletter.store.db import session_scope
from newsletter.store.models import BatchRun, Delivery, RateLimitThrottle

OUTCOMES = ("sent", "failed", "skipped", "cancelled")
BATCH_DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class OpsCollector:
    """A prometheus_client collector: one snapshot per scrape."""

    def __init__(self, settings: Settings, broker: BrokerView | None = None):
        self.settings = settings
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.settings) as session:
            status = collect_status(session, self.settings, self.broker)
            yield messages_by_outcome(session, self.settings.transport)
            yield batch_durations(session)
            yield throttles_by_account(session)
            yield clicks_by_class(session)
        yield from queue_metrics(status)
        yield from worker_metrics(status)
        yield from send_metrics(status)
        yield problem_counts(status)


def registry_for(settings: Settings, broker: BrokerView | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OpsCollector(settings, broker))
    return registry


def clicks_by_class(session: Session) -> CounterMetricFamily:
    """Clicks on counted links by publication and class (human, machine, unsure; docs/clicks.md)."""
    from newsletter.feedback.click_results import clicks_by_publication

    metric = CounterMetricFamily("newsletter_clicks", "Clicks on counted links, all sends",
                                 labels=["publication", "class"])
    for slug, kind, count in clicks_by_publication(session):
        metric.add_metric([slug, kind], count)
    return metric


def messages_by_outcome(session: Session, transport: str) -> CounterMetricFamily:
    """Ledger outcomes by the transport and account each row was handed to. Rows
    never handed to one (skipped, cancelled, or sent before the ledger kept it)
    count under ``transport``, the configured one, with no account."""
    metric = CounterMetricFamily("newsletter_messages", "Ledger rows that reached an outcome, all sends",
                                 labels=["transport", "account", "outcome"])
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row_transport, account, state, count in session.execute(
        select(Delivery.transport, Delivery.account, Delivery.state, func.count())
        .where(Delivery.state.in_(OUTCOMES)).group_by(Delivery.transport, Delivery.account, Delivery.state)
    ).all():
        lane = counts.setdefault((row_transport or transport, account or ""), {})
        lane[state] = lane.get(state, 0) + count
    counts.setdefault((transport, ""), {})
    for (lane_transport, account), by_state in sorted(counts.items()):
        for outcome in OUTCOMES:
            metric.add_metric([lane_transport, account, outcome], by_state.get(outcome, 0))
    return metric


def throttles_by_account(session: Session) -> CounterMetricFamily:
    metric = CounterMetricFamily("newsletter_rate_limit_throttles",
                                 "Times a provider asked an account to slow down (SMTP 421, HTTP 429), "
                                 "once per chunk of messages", labels=["account"])
    for account, count in session.execute(select(RateLimitThrottle.account, RateLimitThrottle.throttles)
                                          .order_by(RateLimitThrottle.account)):
        metric.add_metric([account], count)
    return metric


def batch_durations(session: Session) -> HistogramMetricFamily:
    columns = [func.sum(case((BatchRun.duration_seconds <= le, 1), else_=0)) for le in BATCH_DURATION_BUCKETS]
    row = session.execute(select(func.count(), func.sum(BatchRun.duration_seconds), *columns)).one()
    total, seconds, cumulative = row[0] or 0, row[1] or 0.0, [n or 0 for n in row[2:]]
    buckets = [(str(le), n) for le, n in zip(BATCH_DURATION_BUCKETS, cumulative)] + [("+Inf", total)]
    metric = HistogramMetricFamily("newsletter_batch_duration_seconds", "How long batch tasks took")
    metric.add_metric([], buckets, sum_value=seconds)
    return metric


def queue_metrics(status: Status) -> Iterator[Metric]:
    depth = GaugeMetricFamily("newsletter_queue_depth", "Messages waiting in a queue", labels=["queue"])
    age = GaugeMetricFamily("newsletter_queue_oldest_message_age_seconds", "Age of the oldest waiting message",
                            labels=["queue"])
    for q in status.queues:
        depth.add_metric([q.name], q.depth)
        if q.oldest_age_seconds is not None:
            age.add_metric([q.name], q.oldest_age_seconds)
    yield depth
    yield age


def worker_metrics(status: Status) -> Iterator[Metric]:
    count = GaugeMetricFamily("newsletter_workers", "Workers by state (running, stopped, gone)", labels=["state"])
    for state in ("running", "stopped", "gone"):
        count.add_metric([state], sum(1 for w in status.workers if w.state == state))
    busy = GaugeMetricFamily("newsletter_worker_tasks_in_progress", "Tasks a running worker is working on",
                             labels=["worker"])
    for w in status.workers:
        if w.alive:
            busy.add_metric([w.node], w.active_tasks)
    yield count
    yield busy


def _send_gauges() -> dict[str, GaugeMetricFamily]:
    specs = {
        "progress": ("newsletter_send_progress_ratio", "Share of the audience done (sent, failed, skipped, cancelled)"),
        "rate": ("newsletter_send_rate_messages_per_second", "Messages sent per second over the last minute"),
        "duplicates": ("newsletter_send_possible_duplicates", "Rows that may have been delivered more than once"),
        "extra_copies": ("newsletter_send_extra_copies",
                         "Copies beyond the first that may have been delivered (each one counted)"),
        "orphaned": ("newsletter_send_orphaned_claims", "Rows held by a batch run that stopped renewing its claim"),
        "bounce": ("newsletter_send_bounce_rate", "Bounces over messages attempted"),
        "complaint": ("newsletter_send_complaint_rate", "Complaints over messages sent"),
    }
    return {key: GaugeMetricFamily(name, text, labels=["send_id"]) for key, (name, text) in specs.items()}


def send_metrics(status: Status) -> Iterator[Metric]:
    info = GaugeMetricFamily("newsletter_send_info", "Active and recent sends (value 1)",
                             labels=["send_id", "publication", "issue", "list", "state"])
    recipients = GaugeMetricFamily("newsletter_send_recipients", "A send's ledger rows by state",
                                   labels=["send_id", "state"])
    gauges = _send_gauges()
    for s in status.sends:
        sid = str(s.send_id)
        info.add_metric([sid, s.publication, s.issue, s.list, s.state], 1)
        for state, value in (("sent", s.sent), ("failed", s.failed), ("skipped", s.skipped),
                             ("cancelled", s.cancelled), ("pending", s.pending)):
            recipients.add_metric([sid, state], value)
        gauges["progress"].add_metric([sid], s.done / s.audience if s.audience else 0.0)
        gauges["rate"].add_metric([sid], s.rate_per_second)
        gauges["duplicates"].add_metric([sid], s.possible_duplicates)
        gauges["extra_copies"].add_metric([sid], s.extra_copies)
        gauges["orphaned"].add_metric([sid], s.orphaned_claims)
        gauges["bounce"].add_metric([sid], s.bounce_rate)
        gauges["complaint"].add_metric([sid], s.complaint_rate)
    yield info
    yield recipients
    yield from gauges.values()


def problem_counts(status: Status) -> GaugeMetricFamily:
    metric = GaugeMetricFamily("newsletter_problems", "Problems `newsletter ops status` reports",
                               labels=["kind", "severity"])
    counts: dict[tuple[str, str], int] = {}
    for p in status.problems:
        counts[(p.kind, p.severity)] = counts.get((p.kind, p.severity), 0) + 1
    for (kind, severity), n in sorted(counts.items()):
        metric.add_metric([kind, severity], n)
    return metric
