"""The SMTP transport alone, with the server some milliseconds away: pipelined and not.

    python bench/smtp_pipelining.py [--delay-ms 20] [--connections 1 10] [--per-connection 40]

No database, no Celery: SmtpTransport.send_many hands messages of the sample
issue's size (66 KiB) to Postfix's smtp-sink through bench/delay_proxy.py, with
SMTP_PIPELINING on and off, over 1 and over 10 connections, each chunk
``--per-connection`` messages a connection. smtp-source pushes the same number
of messages over the same number of connections through the same proxy, as the
yardstick of the same moment. Prints messages a second, per connection, and
the transport's CPU milliseconds a message (its threads included).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
sys.path.append(str(ROOT / "bench"))

import send as send_bench  # noqa: E402  (bench/send.py: the services it starts)

from newsletter.transports.base import SENT, Envelope  # noqa: E402
from newsletter.transports.smtp import SmtpTransport  # noqa: E402

SIZE = 66 * 1024


def message(n: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    head = f"From: news@example.org\r\nTo: reader{n}@example.com\r\nSubject: bench\r\n\r\n".encode()
    return head + line * (SIZE // len(line))


def envelopes(count: int, start: int) -> list[Envelope]:
    return [Envelope(n, send_bench.SENDER, f"reader{n}@example.com", message(n)) for n in range(start, start + count)]


def run_transport(port: int, connections: int, pipelining: bool, count: int) -> tuple[float, float]:
    """(messages a second, CPU ms a message) of one chunk over open connections."""
    transport = SmtpTransport("127.0.0.1", port, security="none", connections=connections, pipelining=pipelining,
                              messages_per_connection=10 * count)
    with transport:
        transport.send_many(envelopes(connections, 0))  # open every connection first
        batch = envelopes(count, connections)
        cpu, started = time.process_time(), time.perf_counter()
        results = transport.send_many(batch)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if any(r.status != SENT for r in results):
        raise SystemExit(f"not all sent: {[r for r in results if r.status != SENT][:3]}")
    return count / seconds, cpu * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=20.0, help="round trip to the server")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--per-connection", type=int, default=40, help="messages a connection in the chunk")
    args = parser.parse_args()
    sink_binary, source_binary = send_bench.postfix_tools()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-smtp-")))
        sink = send_bench.Sink(stack, sink_binary, folder)
        port = send_bench.free_port()
        send_bench.start(stack, [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), str(port),
                                 f"127.0.0.1:{sink.port}", "--delay-ms", str(args.delay_ms / 2)], folder / "proxy.log")
        send_bench.wait_for_port(port)
        one, five, _ = os.getloadavg()
        print(f"server {args.delay_ms:g} ms away (round trip), messages of {SIZE // 1024} KiB; "
              f"{os.cpu_count()} cores, load average {one:.1f} (1 min), {five:.1f} (5 min)")
        for connections in args.connections:
            count = connections * args.per_connection
            source = send_bench.smtp_source(source_binary, port, count, SIZE, connections)
            print(f"  {connections} connection(s): smtp-source {source:,.0f} messages/s")
            rates = {}
            for pipelining in (False, True):
                rate, cpu = run_transport(port, connections, pipelining, count)
                rates[pipelining] = rate
                label = "pipelined" if pipelining else "one command at a time"
                print(f"    {label:<22} {rate:7,.0f} messages/s  {rate / connections:5.1f} per connection"
                      f"  {rate / source:5.2f} x smtp-source   CPU {cpu:.2f} ms/message")
            print(f"    pipelined / one command at a time: {rates[True] / rates[False]:.2f} x")


if __name__ == "__main__":
    main()
