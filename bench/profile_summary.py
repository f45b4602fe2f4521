"""Where a send worker's CPU goes, from py-spy's collapsed stacks.

    python bench/profile_summary.py PROFILE.txt [--top 8] [--callees] [--cpu-ms 0.41]

Reads what ``bench/send.py --profile DIR`` leaves (``py-spy record --format raw``:
one stack a line, frames root first, separated by ``;``, then the number of
samples) and puts every sample in one stage of a send, by the first rule
below that one of its frames matches. bench/send.py asks py-spy for the
threads that hold the GIL only, so the shares are shares of the Python
work, not of wall time (the kernel's part, bench/send.py prints apart, is in
the samples of whatever called it). With ``--cpu-ms``, the CPU per message
bench/send.py measured for that run, each stage also gets its share of it
in microseconds.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

# (stage, substrings a frame may contain); the first stage a frame matches wins.
STAGES = [
    ("DKIM signing", ("newsletter/sending/dkim.py", "(dkim/")),
    ("link tokens (audience/tokens.py)", ("newsletter/audience/tokens.py", "(itsdangerous/")),
    ("dot-stuffing", ("_dot_stuffed (",)),
    ("logging", ("(logging/", "newsletter/logs.py")),
    ("building the message", ("envelope (newsletter/sending/send_template.py", "newsletter/authoring/message.py")),
    ("SMTP: socket reads and writes", ("_write (newsletter/transports/smtp/wire.py", "(socket.py", "(ssl.py")),
    ("SMTP: commands and replies", ("newsletter/transports/smtp", "(smtplib.py")),
    ("ledger: claim", ("claim_rows (newsletter/sending/claims.py", "Lease.take (")),
    ("ledger: late unsubscribes and suppressions", ("skip_unwanted (",)),
    ("ledger: record results", ("record_results (",)),
    ("ledger: mark sending", ("_deliver_chunk (newsletter/sending/delivery.py",)),
    ("lease renewals (thread)", ("_renew_until_stopped (",)),
    ("ledger: batch start and end", ("newsletter/sending/delivery.py", "newsletter/sending/claims.py", "newsletter/sending/handover.py",
                                     "newsletter/sending/leases.py")),
    ("ops: batch run record, log context", ("workers/tasks.py",)),
]
OTHER = "Celery, kombu, billiard (per task)"


def stage_of(frames: list[str]) -> tuple[str, int]:
    """The stage, and the index of the frame that matched (-1 for none)."""
    for stage, needles in STAGES:
        for index, frame in enumerate(frames):
            if any(needle in frame for needle in needles):
                return stage, index
    return OTHER, -1


def read(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [f for f in stack.split(";") if not f.startswith("process ")], int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=0, help="also the N busiest innermost frames of each stage")
    parser.add_argument("--callees", action="store_true",
                        help="with --top: group by the frame called from the one that matched, not the innermost")
    parser.add_argument("--cpu-ms", type=float, default=0.0, help="the run's measured CPU per message, in ms")
    args = parser.parse_args()
    stages: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    sql: Counter[str] = Counter()
    for frames, count in read(args.profile):
        stage, index = stage_of(frames)
        stages[stage] += count
        if args.callees and 0 <= index < len(frames) - 1:
            leaves[stage][frames[index + 1]] += count
        else:
            leaves[stage][frames[-1] if frames else "?"] += count
        if stage.startswith("ledger"):
            library = next((lib for lib in ("psycopg", "sqlalchemy") for f in reversed(frames) if f"({lib}/" in f), "ours")
            sql[library] += count
    total = sum(stages.values())
    print(f"{args.profile.name}: {total:,} samples")
    for stage, count in stages.most_common():
        per_message = f"  {count / total * args.cpu_ms * 1000:6.0f} µs/message" if args.cpu_ms else ""
        print(f"  {stage:<45} {count / total:6.1%}{per_message}")
        for leaf, n in leaves[stage].most_common(args.top):
            print(f"      {n / total:6.1%}  {leaf}")
    ledger = sum(sql.values())
    if ledger:
        print("  of the ledger's share: " + ", ".join(f"{lib} {n / ledger:.0%}" for lib, n in sql.most_common()))


if __name__ == "__main__":
    main()
