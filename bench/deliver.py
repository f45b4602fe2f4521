"""The library's CPU per message when the server costs nothing: delivering batches in one process.

    python bench/deliver.py [--subscribers 10000] [--batch-size 200] [--connections 4] [--dkim rsa|ed25519|both]
                            [--profile FILE]

What a send worker does for each batch, without Celery and without a socket:
``Deliverer.deliver_batch`` against a fresh PostgreSQL schema (the ledger, the
lease, the late-unsubscribe check), building each message with its link
tokens, and handing the chunk to a transport that accepts everything at once
(it dot-stuffs each message, as the SMTP transport does before writing it).
Prints this process's CPU (user + system) per message for the whole send and,
with ``--profile``, where it went (cProfile, sorted by own time, written to
FILE as well). bench/send.py measures the same work with Celery and SMTP.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from bench.send import DEFAULT_POSTGRES, dkim_keys, fresh_postgres_schema, prepare, sample_issue, schedule  # noqa: E402
from newsletter.config import settings_from  # noqa: E402
from newsletter.sending import lifecycle  # noqa: E402
from newsletter.sending.delivery import Deliverer  # noqa: E402
from newsletter.sending.heap import keep_freed_memory  # noqa: E402
from newsletter.store.db import session_scope  # noqa: E402
from newsletter.transports.base import SENT, Result, Transport  # noqa: E402
from newsletter.transports.smtp.wire import _dot_stuffed  # noqa: E402


class AcceptingTransport(Transport):
    """Takes every message at once, after the work SMTP does on the message itself."""

    name = "accepting"
    preferred_chunk = 0

    def __init__(self) -> None:
        self.messages = 0
        self.octets = 0
        self.largest_chunk = 0

    def send_many(self, envelopes):
        results = []
        for envelope in envelopes:
            self.octets += len(_dot_stuffed(envelope.message, envelope.dot_free))
            results.append(Result(envelope.delivery_id, SENT, provider_message_id=f"q{envelope.delivery_id}"))
        self.messages += len(envelopes)
        self.largest_chunk = max(self.largest_chunk, len(envelopes))
        return results


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4, help="SMTP_CONNECTIONS: the chunk is 25 times this")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's malloc as it is (newsletter/sending/heap.py), to compare")
    parser.add_argument("--profile", type=Path, help="write cProfile's statistics here and print the top of them")
    parser.add_argument("--dkim", choices=("rsa", "ed25519", "both"),
                        help="sign every message with keys made for the run, as bench/send.py does")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-deliver-")))
        env = {
            "NEWSLETTER_DATA_DIR": str(folder / "var"), "DATABASE_URL": fresh_postgres_schema(stack, args.postgres),
            "SECRET_KEYS": "bench-secret-key", "BASE_URL": "https://newsletter.example.org",
            "TRANSPORT": "outbox", "BATCH_SIZE": str(args.batch_size), "SMTP_CONNECTIONS": str(args.connections),
        }
        dkim_env, key_files = dkim_keys(args.dkim, folder)
        settings = settings_from({**env, **dkim_env})
        slugs = prepare(settings, folder, args.subscribers, min(args.subscribers, 1_000),
                        sample_issue(folder, key_files))
        send_id = schedule(settings, slugs, "everyone")
        with session_scope(settings) as session:
            batch_ids = lifecycle.tick(session, settings)
        transport = AcceptingTransport()
        if not args.return_freed_memory:
            keep_freed_memory()  # as a send worker does (workers/tasks.py)
        deliverer = Deliverer(settings, transport)
        profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not waits
        cpu, wall, faults = time.process_time(), time.perf_counter(), _minor_faults()
        if profiler:
            profiler.enable()
        for batch_id in batch_ids:
            with session_scope(settings) as session:
                deliverer.deliver_batch(session, batch_id)
        if profiler:
            profiler.disable()
        cpu, wall, faults = time.process_time() - cpu, time.perf_counter() - wall, _minor_faults() - faults
        with session_scope(settings) as session:
            progress = lifecycle.progress(session, send_id)
        if progress.counts.get("sent") != args.subscribers:
            raise SystemExit(f"the ledger says {progress.counts}, expected {args.subscribers} sent")
        print(f"{args.subscribers:,} messages of {transport.octets / transport.messages / 1024:.1f} KiB in "
              f"{len(batch_ids)} batches of {args.batch_size}, chunks of up to {transport.largest_chunk}, "
              f"{'signed with ' + args.dkim if args.dkim else 'not signed'}; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        print(f"  CPU {cpu * 1e6 / args.subscribers:.0f} µs/message ({wall * 1e6 / args.subscribers:.0f} µs wall),"
              f" {faults / args.subscribers:.1f} page faults/message"
              f"{'  (under cProfile: slower)' if profiler else ''}")
        if profiler:
            profiler.dump_stats(args.profile)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
