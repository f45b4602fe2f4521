"""The SMTP transport alone, with the server some milliseconds away: streamed (BDAT), pipelined (DATA), one at a time.

    python bench/smtp_pipelining.py [--delay-ms 20] [--connections 1 20] [--per-connection 40] [--window 16]

No database, no Celery: SmtpTransport.send_many hands messages of the sample
issue's size (66 KiB) to a real Postfix smtpd (tests/postfix_server.py: it
offers PIPELINING and CHUNKING, and passes each message on to smtp-sink before
it answers) through bench/delay_proxy.py, three ways over the same
connections:

- streamed: BDAT, up to ``--window`` messages in flight a connection;
- pipelined: DATA (SMTP_CHUNKING=false), one round trip a message;
- one command at a time (SMTP_PIPELINING=false).

smtp-source pushes the same number of messages over the same number of
connections through the same proxy to the same Postfix, as the yardstick of
the same moment. Prints messages a second, per connection, the ratio to
smtp-source, and the CPU milliseconds a message of each process taking part,
read from /proc: the transport (its threads included), the delay proxy,
Postfix (smtpd and its helpers) and smtp-sink, and how many cores they kept
busy together (their CPU seconds over the run's seconds). Starting Postfix needs root;
without it the server is smtp-sink alone (no CHUNKING: no streamed line).
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
from tests import postfix_server  # noqa: E402  (a throwaway Postfix smtpd, as the tests run it)

SIZE = 66 * 1024
MODES = (  # label, SmtpTransport options
    ("streamed (BDAT)", dict(pipelining=True, chunking=True)),
    ("pipelined (DATA)", dict(pipelining=True, chunking=False)),
    ("one command at a time", dict(pipelining=False, chunking=False)),
)


def message(n: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    head = f"From: news@example.org\r\nTo: reader{n}@example.com\r\nSubject: bench\r\n\r\n".encode()
    return head + line * (SIZE // len(line))


def envelopes(count: int, start: int) -> list[Envelope]:
    return [Envelope(n, send_bench.SENDER, f"reader{n}@example.com", message(n)) for n in range(start, start + count)]


def run_transport(port: int, connections: int, options: dict, count: int, window: int,
                  processes: send_bench.Processes) -> tuple[float, float, dict[str, float]]:
    """(messages a second, CPU seconds, the other processes' CPU seconds) of one chunk over open connections."""
    transport = SmtpTransport("127.0.0.1", port, security="none", connections=connections,
                              messages_per_connection=10 * count, window=window, **options)
    with transport:
        transport.send_many(envelopes(connections, 0))  # open every connection first
        batch = envelopes(count, connections)
        before = processes.cpu()
        cpu, started = time.process_time(), time.perf_counter()
        results = transport.send_many(batch)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        others = send_bench.Processes.spent(before, processes.cpu())
    if any(r.status != SENT for r in results):
        raise SystemExit(f"not all sent: {[r for r in results if r.status != SENT][:3]}")
    return count / seconds, cpu, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=20.0, help="round trip to the server")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--per-connection", type=int, default=40, help="messages a connection in the chunk")
    parser.add_argument("--window", type=int, default=16, help="SMTP_WINDOW: messages in flight a streamed connection")
    args = parser.parse_args()
    sink_binary, source_binary = send_bench.postfix_tools()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-smtp-")))
        sink = send_bench.Sink(stack, sink_binary, folder)
        groups = {"smtp-sink": lambda: [sink.process.pid]}
        modes = MODES
        server_port, server = sink.port, "smtp-sink (PIPELINING, no CHUNKING)"
        if postfix_server.usable() is None:
            postfix = stack.enter_context(postfix_server.PostfixServer(sink.port))
            master = int((postfix.folder / "queue" / "pid" / "master.pid").read_text().split()[0])
            groups["Postfix"] = lambda: [master, *send_bench.children_of(master)]
            server_port, server = postfix.port, "Postfix smtpd (PIPELINING, CHUNKING) passing each message to smtp-sink"
        else:
            modes = MODES[1:]
        port = send_bench.free_port()
        proxy = send_bench.start(stack, [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), str(port),
                                         f"127.0.0.1:{server_port}", "--delay-ms", str(args.delay_ms / 2)],
                                 folder / "proxy.log")
        groups["delay proxy"] = lambda: [proxy.pid]
        send_bench.wait_for_port(port)
        processes = send_bench.Processes(groups)
        one, five, _ = os.getloadavg()
        print(f"{server}, {args.delay_ms:g} ms away (round trip), messages of {SIZE // 1024} KiB, "
              f"window {args.window}; {os.cpu_count()} cores, load average {one:.1f} (1 min), {five:.1f} (5 min)")
        for connections in args.connections:
            count = connections * args.per_connection
            before = processes.cpu()
            source = send_bench.smtp_source(source_binary, port, count, SIZE, connections)
            others = send_bench.Processes.spent(before, processes.cpu())
            print(f"  {connections} connection(s): smtp-source {source:,.0f} messages/s   "
                  + _cpu_line(others, count))
            rates = {}
            for label, options in modes:
                rate, cpu, others = run_transport(port, connections, options, count, args.window, processes)
                rates[label] = rate
                print(f"    {label:<22} {rate:7,.0f} messages/s  {rate / connections:5.1f} per connection"
                      f"  {rate / source:5.2f} x smtp-source   CPU ms/message: ours {cpu * 1000 / count:.2f}, "
                      + _cpu_line(others, count)
                      + f"; all of them busy {(cpu + sum(others.values())) * rate / count:.2f} cores")
            labels = [label for label, _ in modes]
            print("    " + ", ".join(f"{first} / {labels[-1]}: {rates[first] / rates[labels[-1]]:.2f} x"
                                     for first in labels[:-1]))
        one, five, _ = os.getloadavg()
        print(f"at the end: load average {one:.1f} (1 min), {five:.1f} (5 min)")


def _cpu_line(spent: dict[str, float], count: int) -> str:
    return ", ".join(f"{name} {seconds * 1000 / count:.2f}" for name, seconds in spent.items())


if __name__ == "__main__":
    main()
