"""What one socket read of the NATS transport costs: a fixed part per read beside a part per request.

bench.nats shows the service's CPU per request following its reads per request (`reads/1k`): two workers in
one queue group each read about a third as many requests per wake-up as one worker does. This bench splits a
read's cost in two, in one process against a real nats-server (booking_rpc.devnats): reads of N `echo`
requests as nats-server sends them (`MSG` frames with ClientNats' reply subjects and body) go into the
transport's read path (`DirectClient._feed`: nats-py's parser, `NatsTransport._receive`, the handler, the
read's replies in one socket write), N = 1 .. 64, and a least-squares fit over the medians gives CPU (thread
time) per read and per request. Three ways:

- `warm`: reads back to back, the read path's code and data in the CPU caches;
- `evicted`: before each read a buffer the size of the machine's last-level cache is touched, as the other
  processes (nats-server, the load generator, the other worker) do in part while a worker sleeps between
  reads: a bound on what a read pays for finding its code and data out of the caches;
- `no write`: warm, with the socket write left out (the transport's writer swapped for one that drops the
  bytes): what the write system call adds per read.

    python -m bench.nats_reads [--repeats 300]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import orjson

from booking_rpc.app import service_router
from booking_rpc.config import Settings
from booking_rpc.devnats import running_nats_server
from booking_rpc.loop import run as run_loop
from booking_rpc.server.nats import NatsTransport

SIZES = (1, 2, 4, 8, 16, 32, 64)
ECHO = {"booking_id": "6f1c1f5e-8a55-4c3e-9a43-2f1e9a6b2c10", "note": "猫🐕 bench", "amount": "150000.00"}
WAYS = ("evicted", "warm", "no write")  # in this order: each read after an evicted one finds the path warm again


def read_of(sid: int, count: int, first: int) -> bytes:
    """`count` echo requests in one read, as nats-server delivers ClientNats' requests to a subscriber."""
    frames = []
    for n in range(first, first + count):
        body = orjson.dumps({"pattern": "echo", "data": ECHO, "id": f"{n:08x}-8a55-4c3e-9a43-2f1e9a6b2c10"})
        frames.append(b"MSG echo %d _INBOX.Qk2Xr9Sx3Y1v9OyPq0sZ1b.%d %d\r\n%b\r\n" % (sid, n, len(body), body))
    return b"".join(frames)


class DroppedWrites:
    """Stands in for nats-py's socket transport: the bytes go nowhere (the `no write` way)."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: list[bytes]) -> None:
        pass


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares cost = per_read + per_request * n."""
    mean_n = sum(n for n, _ in points) / len(points)
    mean_t = sum(t for _, t in points) / len(points)
    slope = sum((n - mean_n) * (t - mean_t) for n, t in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return mean_t - slope * mean_n, slope


async def measure(url: str, repeats: int, evict_bytes: int) -> dict[str, dict[int, float]]:
    transport = NatsTransport(service_router(Settings()), None, servers=[url], queue="bench-nats-reads")
    await transport.start()
    await transport.wait_ready()
    nc = transport.nc
    sid = next(sub._id for sub in transport.subscriptions if sub.subject == "echo")
    socket_writer, dropped = nc._transport, DroppedWrites()
    evict = bytearray(evict_bytes)
    ones = b"\x01" * (evict_bytes // 64)
    samples: dict[str, dict[int, list[int]]] = {way: {n: [] for n in SIZES} for way in WAYS}
    gc.disable()
    try:
        # the ways interleaved read by read, so the shared machine's drift hits each alike
        for repeat in range(repeats):
            for n in SIZES:
                for way in WAYS:
                    data = read_of(sid, n, repeat * 100)
                    if way == "evicted":
                        evict[::64] = ones  # one byte per cache line
                    nc._transport = dropped if way == "no write" else socket_writer  # type: ignore[assignment]
                    started = time.thread_time_ns()
                    nc._feed(data)
                    samples[way][n].append(time.thread_time_ns() - started)
                    nc._transport = socket_writer
            if repeat % 20 == 0:
                await asyncio.sleep(0)  # let the connection's other traffic (PINGs) through
    finally:
        gc.enable()
        nc._transport = socket_writer
        await transport.shutdown(1)
    return {way: {n: statistics.median(v) / 1000 for n, v in by_size.items()} for way, by_size in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300, help="reads of each size, per way")
    parser.add_argument("--evict-kib", type=int, default=32768, help="what is touched before an `evicted` read")
    opts = parser.parse_args(argv)
    with running_nats_server() as nats:
        results = run_loop(measure(nats.url, opts.repeats, opts.evict_kib * 1024))
    ways = list(results)
    print(f"{'requests/read':>13} " + " ".join(f"{way + ' µs':>12}" for way in ways))
    for n in SIZES:
        print(f"{n:>13} " + " ".join(f"{results[way][n]:>12.1f}" for way in ways))
    print("\nfit (CPU per read = fixed + per request x requests):")
    for way in ways:
        fixed, per_request = fit(list(results[way].items()))
        print(f"- {way:8}: {fixed:6.1f} µs per read + {per_request:5.2f} µs per request")


if __name__ == "__main__":
    main()
