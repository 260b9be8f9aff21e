"""Hold+confirm flows with and without an event subscriber: what attaching one costs the writes.

`--concurrency` flows (booking.reservation.create, then booking.reservation.confirm; a fresh user each
time) over real sockets against `booking-rpc serve` (a subprocess with its relay and jobs on), each run on
a fresh database cloned from a migrated template. Variants, interleaved round by round (the machine is
shared: compare within one run, not across runs):

- `none`: no subscriber;
- `nest`: a genuine NestJS 12 microservice (tests/interop/nest_server.mjs) subscribed to booking.confirmed;

Prints bookings/s, flow p50/p99, the subscriber's lag (confirm reply → the NestJS handler, both on
CLOCK_MONOTONIC; the handler stamps its own time, so this process's busy loop reading NestJS's output is
not in the lag) p50/p99, and PostgreSQL's wait events sampled during the run (`pg_stat_activity`,
every 20 ms). Targets: `nest` ≥ 0.9× `none` bookings/s; lag p99 ≤ 100 ms.

    python -m bench.flows --concurrency 24 --duration 10 --rounds 2 [--json out.json]   (DATABASE_URL or embedded)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    BENCH_SQL,
    alternating,
    nest_subscriber,
    percentile,
    start_serve,
    stop_process,
    write_json,
)
from bench.report import flows_target_lines
from booking_rpc.app import build_context, service_router
from booking_rpc.client import Client, RemoteError
from booking_rpc.config import Settings
from booking_rpc.db.pool import create_pool
from booking_rpc.db.scratch import create_database, drop_database, server_dsn
from booking_rpc.loop import new_event_loop

VARIANTS = ("none", "nest")
SLOTS, CAPACITY = 64, 100_000
CONNECTIONS = 4


@dataclass(frozen=True)
class Dataset:
    clinic_id: uuid.UUID
    service_id: uuid.UUID
    slots: list[uuid.UUID]


async def make_template(base: str, name: str) -> Dataset:
    """A migrated database with one service and SLOTS slots of room for every flow (cloned per run)."""
    dsn = await create_database(base, name, migrated=True)
    clinic = uuid.uuid4()
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        # through the handler, as the gateway would create it
        ctx = build_context(Settings(), pool)
        route = service_router().lookup("booking.services.upsert")
        assert route is not None
        body = {"actor": {"id": str(uuid.uuid4()), "role": "admin"}, "clinic_id": str(clinic), "name": "Bench flows"}
        service = (await route.invoke({**body, "price": "100.00"}, ctx)).id
        async with pool.acquire() as conn:
            start = dt.date.today() + dt.timedelta(days=30)
            await conn.execute(BENCH_SQL["bench.fill_series"], service, 4, 1, start, 1, CAPACITY)
            rows = await conn.fetch("SELECT id FROM slots WHERE service_id = $1 ORDER BY id LIMIT $2", service, SLOTS)
            await conn.execute("ANALYZE services, slots")
    finally:
        await pool.close()
    return Dataset(clinic, service, [r["id"] for r in rows])


@dataclass
class Service:
    process: subprocess.Popen[str]
    port: int

    def stop(self) -> None:
        stop_process(self.process, 10)


def start_service(dsn: str, subscribers: str, pool_size: int) -> Service:
    env = {
        "DATABASE_URL": dsn,
        "BOOKING_RPC_PORT": "0",
        "BOOKING_RPC_METRICS_ENABLED": "false",
        "BOOKING_RPC_SUBSCRIBERS": subscribers,
        "BOOKING_RPC_DB_POOL_MAX_SIZE": str(pool_size),
    }
    ports: list[int] = []

    def ready(entry: dict[str, Any]) -> bool:
        if entry.get("event") == "booking-rpc ready":
            ports.append(int(entry["port"]))
        return bool(ports)

    return Service(start_serve(env, ready), ports[0])


async def sample_waits(dsn: str, stop: asyncio.Event, database: str) -> Counter[str]:
    """PostgreSQL wait events of the run's active backends, sampled every 20 ms."""
    waits: Counter[str] = Counter()
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w, count(*) AS n "
                "FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid() "
                "GROUP BY 1",
                database,
            )
            waits.update({r["w"]: r["n"] for r in rows})
            waits["samples"] += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return waits


async def flows(port: int, ds: Dataset, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    clients = [await Client.connect("127.0.0.1", port) for _ in range(CONNECTIONS)]
    confirmed_at: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    end = measure_from + duration
    counted = 0

    async def flow(i: int) -> None:
        nonlocal counted
        client = clients[i % CONNECTIONS]
        n = i
        while loop.time() < end:
            user = str(uuid.uuid4())
            actor = {"id": user, "role": "user"}
            started = loop.time()
            try:
                res = await client.send(
                    "booking.reservation.create",
                    {
                        "actor": actor,
                        "user_id": user,
                        "pet_id": str(uuid.uuid4()),
                        "service_id": str(ds.service_id),
                        "slot_id": str(ds.slots[n % len(ds.slots)]),
                    },
                )
                booking = await client.send(
                    "booking.reservation.confirm",
                    {
                        "actor": actor,
                        "reservation_id": res["id"],
                        "lock_id": res["lock_id"],
                        "user_id": user,
                        "payment": {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"},
                    },
                )
            except RemoteError as err:
                errors[err.code or "?"] += 1
                continue
            done = loop.time()
            n += concurrency
            if started >= measure_from and done <= end:
                counted += 1
                latencies.append(done - started)
                confirmed_at[booking["id"]] = time.perf_counter()

    await asyncio.gather(*(flow(i) for i in range(concurrency)))
    for client in clients:
        await client.close()
    latencies.sort()
    return {
        "bookings": counted,
        "bookings_per_s": round(counted / duration, 1),
        "flow_p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "flow_p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "errors": dict(errors),
        "confirmed_at": confirmed_at,
    }


async def one_run(base: str, template: str, ds: Dataset, variant: str, opts: argparse.Namespace) -> dict[str, Any]:
    name = f"bench_flows_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(base, name, template=template)
    try:
        async with contextlib.AsyncExitStack() as stack:
            sub = (
                await stack.enter_async_context(nest_subscriber("booking.confirmed", "booking_id"))
                if variant.startswith("nest")
                else None
            )
            subscribers = f"nest=127.0.0.1:{sub.port}:booking.confirmed" if sub else ""
            service = await asyncio.to_thread(start_service, dsn, subscribers, opts.pool)
            stack.callback(service.stop)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_waits(base, stop, name))
            result = await flows(service.port, ds, opts.concurrency, opts.warmup, opts.duration)
            stop.set()
            waits = await sampler
            confirmed_at = result.pop("confirmed_at")
            if sub is not None:
                end = time.perf_counter() + 10
                while time.perf_counter() < end and any(b not in sub.received for b in confirmed_at):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                lags = sorted(sub.received[b] - t for b, t in confirmed_at.items() if b in sub.received)
                result["delivered"] = f"{len(lags)}/{len(confirmed_at)}"
                result["lag_p50_ms"] = round(percentile(lags, 50) * 1000, 2)
                result["lag_p99_ms"] = round(percentile(lags, 99) * 1000, 2)
            samples = max(1, waits.pop("samples", 1))
            result["waits_per_sample"] = {w: round(n / samples, 2) for w, n in waits.most_common(6)}
    finally:
        await drop_database(base, name)
    result["variant"] = variant
    return result


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    variants = [v for v in opts.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)} (known: {', '.join(VARIANTS)})")
    with server_dsn(os.environ.get("DATABASE_URL"), "bench-flows-pg-") as base:
        template = f"bench_flows_tpl_{uuid.uuid4().hex[:8]}"
        ds = await make_template(base, template)
        runs: list[dict[str, Any]] = []
        try:
            for round_no in range(opts.rounds):
                for variant in alternating(variants, round_no):
                    r = await one_run(base, template, ds, variant, opts)
                    r["round"] = round_no + 1
                    runs.append(r)
                    print(line(r), flush=True)
        finally:
            await drop_database(base, template)
    summary: dict[str, Any] = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            "bookings_per_s": round(median([r["bookings_per_s"] for r in mine]), 1),
            "flow_p50_ms": round(median([r["flow_p50_ms"] for r in mine]), 2),
            "flow_p99_ms": round(median([r["flow_p99_ms"] for r in mine]), 2),
        }
        if variant.startswith("nest"):
            summary[variant]["lag_p50_ms"] = round(median([r["lag_p50_ms"] for r in mine]), 2)
            summary[variant]["lag_p99_ms"] = round(median([r["lag_p99_ms"] for r in mine]), 2)
    result: dict[str, Any] = {
        "bench": "flows",
        "concurrency": opts.concurrency,
        "duration": opts.duration,
        "runs": runs,
        "summary": summary,
    }
    if "none" in summary and "nest" in summary and summary["none"]["bookings_per_s"]:
        # the ratio per round (subscriber run / the no-subscriber run of the same round), then the median
        ratios = []
        for round_no in range(1, opts.rounds + 1):
            pair = {r["variant"]: r for r in runs if r["round"] == round_no}
            if pair["none"]["bookings_per_s"]:
                ratios.append(pair["nest"]["bookings_per_s"] / pair["none"]["bookings_per_s"])
        result["ratio_rounds"] = [round(x, 2) for x in ratios]
        result["ratio"] = round(median(ratios), 2)
        result["lag_p99_ms"] = summary["nest"]["lag_p99_ms"]
    return result


def line(r: dict[str, Any]) -> str:
    text = (
        f"round {r.get('round', '?')} {r['variant']:>14}: {r['bookings_per_s']:7.1f} bookings/s "
        f"(flow p50 {r['flow_p50_ms']} ms, p99 {r['flow_p99_ms']} ms)"
    )
    if "lag_p50_ms" in r:
        text += f"; lag p50 {r['lag_p50_ms']} ms, p99 {r['lag_p99_ms']} ms, delivered {r['delivered']}"
    if r["errors"]:
        text += f"; errors {r['errors']}"
    return text + f"\n      waits/sample {r['waits_per_sample']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", type=int, default=10, help="the service's pool size")
    parser.add_argument("--variants", default="none,nest", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(opts))
    for variant, s in result["summary"].items():
        print(f"median {variant:>14}: {s}")
    if "ratio" in result:
        print("\n".join(["targets:", *flows_target_lines(result)]))
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
