"""A TCP proxy on loopback that puts a mail server some milliseconds away.

    python bench/delay_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT [--delay-ms 10]

Every chunk of bytes is held for ``delay-ms`` before it is passed on, in each
direction, so a round trip through the proxy costs twice that on top of
loopback. Bandwidth is not limited: chunks are delayed, not spaced out, which
is what a long, fat link does. The kernel here has no netem, hence this.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

READ_SIZE = 256 * 1024
# Chunks in flight per direction before the reader waits: keeps memory bounded
# without limiting a 20 ms link below what a sender can fill.
IN_FLIGHT = 256


async def forward_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue = asyncio.Queue(IN_FLIGHT)

    async def read() -> None:
        while True:
            data = await reader.read(READ_SIZE)
            await chunks.put((loop.time() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await chunks.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    # SMTP commands are small writes: Nagle would add its own waits to ours.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(listen_port: int, target_host: str, target_port: int, delay: float) -> None:
    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        _no_delay(client_writer)
        _no_delay(server_writer)
        await asyncio.gather(
            forward_later(client_reader, server_writer, delay),
            forward_later(server_reader, client_writer, delay),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target", help="HOST:PORT of the real server")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="delay each way (a round trip costs twice this)")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    try:
        asyncio.run(serve(args.listen_port, host, int(port), args.delay_ms / 1000))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
