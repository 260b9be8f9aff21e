"""Connections that cost little and a flood that is refused: the transport's memory and overload behaviour.

`idle`: opens `--connections` connections to a booking-rpc server (bench/echo_server.py: the service's
transport, uvloop) and reads the server's RSS from /proc before, with every connection idle, and with a
half frame sent on each (a peer stalled mid-frame, until the incomplete-message timeout): KB per
connection. Targets: <= 2.0 KB idle, <= 5 KB half-frame.

`flood`: `--flood` requests at once (booking.slots.find, which needs the database) spread over
`--flood-connections` connections to `booking-rpc serve` (embedded PostgreSQL or DATABASE_URL), while a
separate connection pings every 10 ms. Prints the answers by code, how fast the refusals (OVERLOADED) came,
the ping p99 during the flood, the server's RSS before and at its peak, and whether any request went
unanswered within 10 s.

    python -m bench.connections [--connections 10000] [--flood 5000 --flood-connections 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import ROOT, percentile, spawn_printing_port, write_json
from booking_rpc.client import Client
from booking_rpc.loop import new_event_loop
from booking_rpc.wire.codec import JSON_CODEC
from booking_rpc.wire.messages import request_message

HALF_FRAME = b'60#{"pattern":"echo","data":{"half":'  # declares 60 units, sends fewer
IDLE_TARGET_KB, HALF_TARGET_KB = 2.0, 5.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def settle(pid: int, seconds: float = 1.0) -> int:
    await asyncio.sleep(seconds)
    return rss_kb(pid)


async def idle(connections: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 1000)), hard))
    server = spawn_printing_port([sys.executable, "-m", "bench.echo_server", "--port", "0"], cwd=ROOT)
    port = int(str(server.info["port"]))
    writers: list[asyncio.StreamWriter] = []
    try:
        # a few connections first, so what the first one allocates once (buffers, caches) is not counted
        for _ in range(50):
            writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
        before = await settle(server.process.pid)
        for _ in range(connections):
            writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
        with_idle = await settle(server.process.pid)
        for writer in writers[50:]:
            writer.write(HALF_FRAME)
        await asyncio.gather(*(w.drain() for w in writers[50:]))
        with_half = await settle(server.process.pid, 2.0)
    finally:
        for writer in writers:
            writer.close()
        server.stop()
    return {
        "connections": connections,
        "rss_before_kb": before,
        "rss_idle_kb": with_idle,
        "rss_half_frame_kb": with_half,
        "idle_kb_per_conn": round((with_idle - before) / connections, 2),
        "half_frame_kb_per_conn": round((with_half - before) / connections, 2),
    }


async def flood(requests: int, connections: int) -> dict[str, Any]:
    import os

    from bench.flows import make_template, start_service
    from booking_rpc.db.pool import with_database
    from booking_rpc.db.scratch import drop_database, server_dsn

    with server_dsn(os.environ.get("DATABASE_URL")) as base:
        name = f"bench_flood_{uuid.uuid4().hex[:8]}"
        ds = await make_template(base, name)
        service = await asyncio.to_thread(start_service, with_database(base, name), "", 10)
        try:
            streams = [await asyncio.open_connection("127.0.0.1", service.port) for _ in range(connections)]
            body = {"service_id": str(ds.service_id), "date_from": "2030-01-01", "date_to": "2030-01-07"}
            async with Client("127.0.0.1", service.port) as warm:
                await warm.send("booking.slots.find", body)
            before = rss_kb(service.process.pid)
            peak = before
            outcomes: Counter[str] = Counter()
            refused_after: list[float] = []
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_kb(service.process.pid))
                    await asyncio.sleep(0.05)

            per_connection = requests // connections

            async def flood_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: int) -> None:
                # raw frames, written at once, and replies split by the codec: the load generator does
                # next to nothing per request, so what is timed is the server
                ids = [f"f{first + i}" for i in range(per_connection)]
                writer.write(b"".join(JSON_CODEC.encode(request_message("booking.slots.find", body, i)) for i in ids))
                sent = time.perf_counter()
                decoder = JSON_CODEC.new_decoder()
                answered = 0
                async with asyncio.timeout(10):
                    while answered < per_connection:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        now = time.perf_counter()
                        for reply in decoder.feed(chunk):
                            answered += 1
                            err = reply.get("err")
                            code = err.get("code", "?") if isinstance(err, dict) else ("ok" if err is None else "?")
                            outcomes[code] += 1
                            if code == "OVERLOADED":
                                refused_after.append(now - sent)
                outcomes["no answer in 10 s"] += per_connection - answered

            # the pinger has a process of its own: this one's loop is busy sending the flood
            loop = asyncio.get_running_loop()
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                await loop.run_in_executor(pool, ping_for, service.port, 0.0)  # the process is up
                pinging = loop.run_in_executor(pool, ping_for, service.port, 3.0)
                await asyncio.sleep(0.5)
                side = asyncio.create_task(watch())
                started = time.perf_counter()
                await asyncio.gather(*(flood_one(r, w, n * per_connection) for n, (r, w) in enumerate(streams)))
                took = time.perf_counter() - started
                done.set()
                await side
                pings = sorted(await pinging)
            for _, writer in streams:
                writer.close()
        finally:
            service.stop()
            with contextlib.suppress(Exception):
                await drop_database(base, name)
    refused_after.sort()
    return {
        "requests": requests,
        "connections": connections,
        "outcomes": dict(outcomes),
        "all_answered_s": round(took, 2),
        "refused_p50_ms": round(percentile(refused_after, 50) * 1000, 1),
        "refused_p99_ms": round(percentile(refused_after, 99) * 1000, 1),
        "ping_p50_ms": round(percentile(pings, 50) * 1000, 2),
        "ping_p99_ms": round(percentile(pings, 99) * 1000, 2),
        "pings": len(pings),
        "rss_before_mb": round(before / 1024, 1),
        "rss_peak_mb": round(peak / 1024, 1),
    }


def ping_for(port: int, seconds: float) -> list[float]:
    """Ping every 10 ms for `seconds` (in a process of its own); each round trip's seconds."""

    async def go() -> list[float]:
        rtts: list[float] = []
        async with Client("127.0.0.1", port) as client:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                await client.send("ping", None, timeout=10)
                rtts.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)
        return rtts

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(go())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000, help="idle connections (0 = skip)")
    parser.add_argument("--flood", type=int, default=5_000, help="requests at once (0 = skip)")
    parser.add_argument("--flood-connections", type=int, default=50)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    result: dict[str, Any] = {"bench": "connections"}
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        if opts.connections:
            r = result["idle"] = runner.run(idle(opts.connections))
            print(
                f"idle: {r['connections']} connections, server RSS {r['rss_before_kb'] / 1024:.1f} -> "
                f"{r['rss_idle_kb'] / 1024:.1f} MB idle -> {r['rss_half_frame_kb'] / 1024:.1f} MB with a half frame each"
            )
            for what, kb, target in (
                ("idle", r["idle_kb_per_conn"], IDLE_TARGET_KB),
                ("half-frame", r["half_frame_kb_per_conn"], HALF_TARGET_KB),
            ):
                print(f"target: {what} <= {target} KB/conn: {kb} KB - {'met' if kb <= target else 'not met'}")
        if opts.flood:
            with tempfile.TemporaryDirectory():
                f = result["flood"] = runner.run(flood(opts.flood, opts.flood_connections))
            print(
                f"flood: {f['requests']} requests at once over {f['connections']} connections, all answered in "
                f"{f['all_answered_s']} s: {f['outcomes']}; OVERLOADED after p50 {f['refused_p50_ms']} ms, "
                f"p99 {f['refused_p99_ms']} ms; ping p50 {f['ping_p50_ms']} ms, p99 {f['ping_p99_ms']} ms "
                f"({f['pings']} pings); server RSS {f['rss_before_mb']} -> peak {f['rss_peak_mb']} MB"
            )
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
