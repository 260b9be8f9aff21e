"""The whole flow (issue 21 §4): hold → confirm → the user's bookings, end to end, booking-rpc beside the
NestJS peer (bench/nest_peer/), with a NestJS subscriber attached.

One flow is `booking.reservation.create` (a fresh user and pet on one of 64 slots), `booking.reservation.confirm`
(paid) and `booking.booking.find` for that user (its one item must be the new booking), one after the other,
from the genuine NestJS ClientProxy (tests/interop/nest_client.mjs --generator flow), closed loop at each
concurrency. Every run has a fresh database cloned from bench.flows' template and a `booking-rpc serve` on it
with its relay on and a NestJS 12 TCP microservice subscribed to booking.confirmed (as bench.flows runs it).
Against the peer, that booking-rpc process serves no request: its relay delivers the outbox rows the peer
wrote in its transactions (the peer has no relay of its own; it wakes booking-rpc's with the coalesced NOTIFY
booking-rpc sends its other replicas), so the subscriber gets the peer's events too.
Targets run interleaved (alternating who goes first per round); figures are medians over the rounds.

Prints bookings/s, flow p50/p99, the events the subscriber received against the bookings committed, and CPU
per booking of the process answering the requests, of the relaying booking-rpc process (against the peer),
and of the run database's PostgreSQL backends. No target: the issue asks for the row beside the peer's.
Commit-to-subscriber lag is bench.flows' figure.

    python -m bench.flow_peer --concurrency 1,16,64 --duration 3 --rounds 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    alternating,
    backends_cpu_since,
    cpu_seconds,
    database_backends_cpu,
    nest_subscriber,
    write_json,
)
from bench.flows import Dataset, make_template, start_service
from bench.peer import TARGETS, nest_load, start_peer
from bench.report import flow_peer_lines
from bench.reservations import postmaster_pid
from booking_rpc.config import Settings
from booking_rpc.db.scratch import create_database, drop_database, server_dsn
from booking_rpc.loop import new_event_loop


@dataclass
class FlowRun:
    target: str
    concurrency: int
    round: int
    flows: int
    bookings_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    committed: int  # bookings in the database after the run (warm-up's too)
    delivered: int  # booking.confirmed events the NestJS subscriber received
    server_cpu_us: float  # per booking: the process answering the requests
    relay_cpu_us: float  # per booking: the booking-rpc process that only relays (against the peer; 0 else)
    postgres_cpu_us: float  # per booking: the run database's backends


def flow_generator(ds: Dataset) -> dict[str, Any]:
    return {"kind": "flow", "service_id": str(ds.service_id), "slots": [str(s) for s in ds.slots]}


async def count_bookings(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM bookings")
    finally:
        await conn.close()
    return n


async def one_run(
    base: str, template: str, ds: Dataset, target: str, c: int, round_no: int, opts: argparse.Namespace
) -> FlowRun:
    name = f"bench_flowpeer_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(base, name, template=template)
    try:
        async with contextlib.AsyncExitStack() as stack:
            sub = await stack.enter_async_context(nest_subscriber("booking.confirmed", "booking_id"))
            relay = await asyncio.to_thread(
                start_service, dsn, f"nest=127.0.0.1:{sub.port}:booking.confirmed", opts.pool
            )
            stack.callback(relay.stop)
            port, server_pid = relay.port, relay.process.pid
            if target != TARGETS[0]:
                peer = await asyncio.to_thread(lambda: start_peer(dsn, opts.pool, nagle=opts.peer_nagle))
                stack.callback(peer.stop)
                port, server_pid = int(peer.info["port"]), peer.process.pid  # type: ignore[call-overload]
            postmaster = await postmaster_pid(dsn)
            pg0 = database_backends_cpu(postmaster, name) if postmaster else {}
            cpu0, relay0 = cpu_seconds(server_pid), cpu_seconds(relay.process.pid)
            stats = await asyncio.to_thread(nest_load, flow_generator(ds), c, opts.duration, opts.warmup, port=port)
            cpu, relay_cpu = cpu_seconds(server_pid) - cpu0, cpu_seconds(relay.process.pid) - relay0
            pg = backends_cpu_since(pg0, database_backends_cpu(postmaster, name)) if postmaster else float("nan")
            committed = await count_bookings(dsn)
            deadline = time.monotonic() + 15
            while len(sub.received) < committed and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            delivered = len(sub.received)
    finally:
        await drop_database(base, name)
    per = 1e6 / max(1, committed)  # the CPU window covers the warm-up's bookings too
    return FlowRun(
        target=target,
        concurrency=c,
        round=round_no,
        flows=int(stats["requests"]),
        bookings_per_s=round(float(stats["rps"]), 1),
        p50_ms=round(float(stats["p50_ms"] or "nan"), 2),
        p99_ms=round(float(stats["p99_ms"] or "nan"), 2),
        errors=dict(stats.get("errors") or {}),
        committed=committed,
        delivered=delivered,
        server_cpu_us=round(cpu * per, 1),
        relay_cpu_us=0.0 if target == TARGETS[0] else round(relay_cpu * per, 1),
        postgres_cpu_us=round(pg * per, 1),
    )


def line(r: FlowRun) -> str:
    errors = f"; errors {r.errors}" if r.errors else ""
    relay = f", relay {r.relay_cpu_us:.0f}" if r.target != TARGETS[0] else ""
    return (
        f"  round {r.round} {r.target:<12} c={r.concurrency:<3} {r.bookings_per_s:7.1f} bookings/s  "
        f"flow p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  delivered {r.delivered}/{r.committed}  "
        f"CPU µs/booking: server {r.server_cpu_us:.0f}{relay}, PostgreSQL {r.postgres_cpu_us:.0f}{errors}"
    )


def summarise(runs: list[FlowRun], levels: list[int]) -> list[dict[str, Any]]:
    """Per level: each target's medians and booking-rpc's bookings/s over the peer's (median of the rounds)."""
    rows = []
    for c in levels:
        by = {t: [r for r in runs if r.concurrency == c and r.target == t] for t in TARGETS}
        row: dict[str, Any] = {"concurrency": c}
        for t, rs in by.items():
            row[t] = {
                k: round(statistics.median(getattr(r, k) for r in rs), 2)
                for k in ("bookings_per_s", "p50_ms", "p99_ms", "server_cpu_us", "relay_cpu_us", "postgres_cpu_us")
            }
            row[t]["delivered"] = f"{sum(r.delivered for r in rs)}/{sum(r.committed for r in rs)}"
        pairs = [a.bookings_per_s / b.bookings_per_s for a, b in zip(*by.values(), strict=True) if b.bookings_per_s]
        row["ratio"] = round(statistics.median(pairs), 2) if pairs else float("nan")
        rows.append(row)
    return rows


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in opts.concurrency.split(",")]
    runs: list[FlowRun] = []
    with server_dsn(os.environ.get("DATABASE_URL")) as base:
        template = f"bench_flowpeer_tpl_{uuid.uuid4().hex[:8]}"
        ds = await make_template(base, template)
        try:
            for c in levels:
                for round_no in range(1, opts.rounds + 1):
                    for target in alternating(TARGETS, round_no - 1):
                        r = await one_run(base, template, ds, target, c, round_no, opts)
                        runs.append(r)
                        print(line(r), flush=True)
        finally:
            await drop_database(base, template)
    return {
        "bench": "flow_peer",
        "duration": opts.duration,
        "rounds": opts.rounds,
        "runs": [asdict(r) for r in runs],
        "summary": summarise(runs, levels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels (flows in flight)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--pool", type=int, default=Settings.model_fields["db_pool_max_size"].default, help="both servers' pool size"
    )
    parser.add_argument("--peer-nagle", action="store_true", help="the peer keeps NestJS's default Nagle on")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(opts))
    print("\nmedians over the rounds (the peer's events delivered by booking-rpc's relay):")
    print("\n".join(flow_peer_lines(result["summary"])))
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
