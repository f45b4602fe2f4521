"""What needs an operator's attention, said plainly, with what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.config import Settings
from newsletter.sending.delivery import SEND_TIME_FAILURE
from newsletter.ops.broker import QueueStats
from newsletter.ops.heartbeats import WorkerStatus
from newsletter.ops.sends import SendStatus
from newsletter.store.models import SendState
from newsletter.wording import counted

# Mailbox providers start filtering or blocking senders above this complaint rate.
COMPLAINT_RATE_PROVIDERS_ACT = 0.003

WARNING = "warning"
CRITICAL = "critical"


@dataclass(frozen=True)
class OpsProblem:
    kind: str  # stalled_send | orphaned_claims | paused_by_send_failure | worker_gone | ...
    severity: str  # warning | critical
    subject: str  # "send 12", "queue send", "worker send@host"
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}" + (f" ({self.fix})" if self.fix else "")


def find_problems(
    settings: Settings, queues: list[QueueStats], workers: list[WorkerStatus], sends: list[SendStatus], now: datetime
) -> list[OpsProblem]:
    problems = queue_problems(queues, workers) + worker_problems(workers)
    for send in sends:
        problems += send_problems(settings, send, now)
    return problems


def queue_problems(queues: list[QueueStats], workers: list[WorkerStatus]) -> list[OpsProblem]:
    consumed = {q for w in workers if w.alive for q in w.queues}
    return [
        OpsProblem(
            "queue_without_consumer", CRITICAL, f"queue {q.name}",
            f"{counted(q.depth, 'message')} waiting and no running worker consumes this queue",
            f"start a worker with --queues {q.name} (see the Procfile)",
        )
        for q in queues
        if q.depth and q.name not in consumed
    ]


def worker_problems(workers: list[WorkerStatus]) -> list[OpsProblem]:
    return [
        OpsProblem(
            "worker_gone", WARNING, f"worker {w.node}",
            f"no heartbeat for {w.seconds_since_seen:.0f}s (pid {w.pid} on {w.hostname})",
            "check the process manager's log for it; rows it held are taken over once their lease lapses",
        )
        for w in workers
        if w.state == "gone"
    ]


def send_problems(settings: Settings, send: SendStatus, now: datetime) -> list[OpsProblem]:
    subject = f"send {send.send_id}"
    problems = []
    if send.state == SendState.SENDING and send.pending and send.last_progress_at:
        idle = (now - send.last_progress_at).total_seconds()
        if idle > settings.stall_warning_seconds:
            problems.append(OpsProblem(
                "stalled_send", CRITICAL, subject, f"no progress for {idle:.0f}s with {counted(send.pending, 'recipient')} to go",
                "check that send workers are running and the transport answers (newsletter ops status)",
            ))
    for lane in send.throttled:
        problems.append(OpsProblem(
            "throttled_send", CRITICAL, subject,
            f"the server keeps asking {lane.transport} account '{lane.account}' to slow down and nothing went out "
            f"for over {lane.seconds:.0f}s; {counted(lane.waiting, 'recipient')} waiting (last answer: {lane.last_error[:200]})",
            "ask the provider about the account's limits or reputation, or lower its rate (RATE_LIMIT_PER_SECOND "
            "or the publication's sending.rate); rows still unsent when RETRY_WINDOW_SECONDS runs out fail with the reason",
        ))
    if send.lost_batches:
        problems.append(OpsProblem(
            "batches_lost", WARNING, subject, send.lost_batches,
            "the workers and the transport are not the cause: make the broker keep its queues (Redis with "
            "persistence, `maxmemory-policy noeviction`); the beat hands lost batches out again within "
            "BATCH_LOST_SECONDS",
        ))
    if send.orphaned_claims:
        problems.append(OpsProblem(
            "orphaned_claims", WARNING, subject,
            f"{counted(send.orphaned_claims, 'recipient row')} claimed by a worker that stopped renewing its claim "
            "(it died, hung, or lost the database)",
            "a running send worker takes them over when the next beat tick hands their batch out again; "
            "rows that were being sent are counted as possible duplicates. If this stays, check that a send "
            "worker and the beat are running",
        ))
    if send.state == SendState.PAUSED and send.paused_reason.startswith("error budget"):
        problems.append(OpsProblem(
            "paused_by_error_budget", CRITICAL, subject, send.paused_reason,
            f"fix the cause, then `newsletter sends resume {send.send_id}`",
        ))
    if send.state == SendState.PAUSED and send.paused_reason.startswith(SEND_TIME_FAILURE):
        problems.append(OpsProblem(
            "paused_by_send_failure", CRITICAL, subject, send.paused_reason,
            f"nothing more goes out until this is fixed; fix what it names, then `newsletter sends resume {send.send_id}`",
        ))
    return problems + rate_problems(settings, send)


def rate_problems(settings: Settings, send: SendStatus) -> list[OpsProblem]:
    subject = f"send {send.send_id}"
    problems = []
    if send.bounce_rate > settings.bounce_rate_warning:
        problems.append(OpsProblem(
            "bounce_rate", WARNING, subject,
            f"bounce rate {send.bounce_rate:.2%} ({send.bounces} bounces) is above {settings.bounce_rate_warning:.2%}",
            "clean the list: remove addresses that bounce, confirm old sign-ups",
        ))
    if send.complaint_rate >= COMPLAINT_RATE_PROVIDERS_ACT:
        severity, limit = CRITICAL, COMPLAINT_RATE_PROVIDERS_ACT
    elif send.complaint_rate > settings.complaint_rate_warning:
        severity, limit = WARNING, settings.complaint_rate_warning
    else:
        return problems
    problems.append(OpsProblem(
        "complaint_rate", severity, subject,
        f"complaint rate {send.complaint_rate:.2%} ({send.complaints} complaints) is at or above {limit:.2%}"
        + ("; mailbox providers act at this level" if severity == CRITICAL else ""),
        "consider pausing; check the list's consent and the unsubscribe link",
    ))
    return problems
