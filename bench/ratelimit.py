"""What a chunk's ``acquire`` costs against Redis: an account's limiter with
one, two and three limits.

    python bench/ratelimit.py [--redis redis://127.0.0.1:6379/15] [--acquires 5000]

Limits high enough never to make a worker wait, so what is measured is the
call itself: Redis round trips per acquire (counted on the connection), the
client's CPU microseconds per acquire, and the wall-clock microseconds per
acquire, each the best of three runs, with ratios to the one-limit account
taken within this run. Keys are made under a name of this run's own and deleted
at the end; nothing else in Redis is touched.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import redis  # noqa: E402

from newsletter.sending.ratelimit import AccountLimits, RedisAccountLimiter  # noqa: E402


class CountingConnection(redis.Connection):
    commands = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.commands += 1
        return super().send_packed_command(command, check_health)


def measure(limiter, acquires: int) -> tuple[float, float, float]:
    """(round trips, CPU us, wall us) per acquire, best of three."""
    limiter.acquire()  # the script is loaded
    best_cpu = best_wall = float("inf")
    trips = 0.0
    for _ in range(3):
        CountingConnection.commands = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(acquires):
            limiter.acquire()
        best_cpu = min(best_cpu, (time.process_time() - cpu) / acquires * 1e6)
        best_wall = min(best_wall, (time.perf_counter() - wall) / acquires * 1e6)
        trips = CountingConnection.commands / acquires
    return trips, best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--acquires", type=int, default=5000)
    args = parser.parse_args()
    pool = redis.ConnectionPool.from_url(args.redis, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    run = f"bench-{uuid.uuid4().hex[:8]}"
    huge = 10**9
    limiters = {
        "account: per second": RedisAccountLimiter(client, AccountLimits(f"{run}-1", per_second=huge)),
        "account: second + hour": RedisAccountLimiter(client, AccountLimits(f"{run}-2", per_second=huge,
                                                                            per_hour=huge)),
        "account: second + hour + day": RedisAccountLimiter(
            client, AccountLimits(f"{run}-3", per_second=huge, per_hour=huge, per_day=huge)),
    }
    try:
        results = {name: measure(limiter, args.acquires) for name, limiter in limiters.items()}
    finally:
        keys = client.keys(f"newsletter:rate-limit:*{run}*")
        if keys:
            client.delete(*keys)
    base_wall = results["account: per second"][2]
    print(f"{args.acquires} acquires, best of 3")
    print(f"  {'limiter':32} {'round trips':>11} {'client CPU':>12} {'wall':>10} {'wall / one':>10}")
    for name, (trips, cpu, wall) in results.items():
        print(f"  {name:32} {trips:11.2f} {cpu:9.1f} µs {wall:7.1f} µs {wall / base_wall:9.2f}x")


if __name__ == "__main__":
    main()
