"""Transport bench: booking-rpc `echo` (JSON and msgpack) beside a NestJS 12 TCP server, same load.

Closed loop: N connections × M requests in flight, from W load-generator processes running our client.
Prints req/s, p50/p95/p99 and the server's CPU seconds per request for each target, and the ratios
against NestJS. On 2 cores the load generator competes with the server for CPU, so req/s is bounded by
the client; CPU per request is the efficiency figure that does not depend on it.

    python -m bench.transport --connections 4 --inflight 32 --duration 10 --warmup 2 [--json out.json]
    python -m bench.transport --nest-client   # the genuine NestJS client as load (tests/interop)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import INTEROP, Spawned, cpu_seconds, ensure_node_modules, percentile, spawn_printing_port
from booking_rpc.client import Client
from booking_rpc.loop import new_event_loop

PAYLOAD = {"booking_id": "6f1c1f5e-8a55-4c3e-9a43-2f1e9a6b2c10", "note": "猫🐕 bench", "amount": "150000.00"}


@dataclass
class Result:
    target: str
    load: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_s: float
    cpu_us_per_request: float


async def _worker(
    port: int, codec: str, connections: int, inflight: int, warmup: float, duration: float
) -> list[float]:
    clients = [await Client.connect("127.0.0.1", port, codec=codec) for _ in range(connections)]
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    start = clock()
    measure_from = start + warmup
    end = measure_from + duration
    latencies: list[float] = []

    async def one_lane(client: Client) -> None:
        while True:
            t0 = clock()
            if t0 >= end:
                return
            await client.send("echo", PAYLOAD)
            t1 = clock()
            if t0 >= measure_from:
                latencies.append(t1 - t0)

    await asyncio.gather(*(one_lane(c) for c in clients for _ in range(inflight)))
    for c in clients:
        await c.close()
    return latencies


def _run_worker(args: tuple[int, str, int, int, float, float]) -> list[float]:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_worker(*args))


def python_load(name: str, server: Spawned, port: int, codec: str, opts: argparse.Namespace) -> Result:
    per_worker = max(1, opts.connections // opts.workers)
    jobs = [(port, codec, per_worker, opts.inflight, opts.warmup, opts.duration)] * opts.workers
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(opts.workers) as pool:
        async_result = pool.map_async(_run_worker, jobs)
        time.sleep(opts.warmup)
        cpu0 = cpu_seconds(server.process.pid)
        t0 = time.monotonic()
        per_process = async_result.get(timeout=opts.warmup + opts.duration + 60)
        seconds = time.monotonic() - t0
        cpu1 = cpu_seconds(server.process.pid)
    latencies = sorted(x for chunk in per_process for x in chunk)
    requests = len(latencies)
    server_cpu = cpu1 - cpu0
    return Result(
        target=name,
        load=f"python x{opts.workers} ({opts.connections} conn x {opts.inflight} in flight)",
        requests=requests,
        seconds=round(seconds, 2),
        rps=round(requests / opts.duration, 1),
        p50_ms=round(percentile(latencies, 50) * 1000, 3),
        p95_ms=round(percentile(latencies, 95) * 1000, 3),
        p99_ms=round(percentile(latencies, 99) * 1000, 3),
        server_cpu_s=round(server_cpu, 3),
        cpu_us_per_request=round(server_cpu / requests * 1e6, 2) if requests else float("nan"),
    )


def nest_client_load(name: str, server: Spawned, port: int, opts: argparse.Namespace) -> Result:
    """The genuine NestJS ClientProxy as load (tests/interop/nest_client.mjs --load)."""
    cmd = [
        "node",
        str(INTEROP / "nest_client.mjs"),
        "--port",
        str(port),
        "--load",
        "--concurrency",
        str(opts.connections * opts.inflight),
        "--duration",
        str(opts.duration),
        "--warmup",
        str(opts.warmup),
        "--pattern",
        "echo",
    ]
    cpu0 = cpu_seconds(server.process.pid)
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=opts.duration + opts.warmup + 60)
    cpu1 = cpu_seconds(server.process.pid)
    stats: dict[str, Any] = {}
    for line in out.stdout.decode().splitlines():
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and "rps" in parsed:
            stats = parsed
    requests = int(stats.get("requests", 0))
    server_cpu = cpu1 - cpu0  # includes the warm-up: counted the same way for every target
    return Result(
        target=name,
        load=f"nestjs client ({opts.connections * opts.inflight} in flight)",
        requests=requests,
        seconds=float(opts.duration),
        rps=float(stats.get("rps", 0.0)),
        p50_ms=float(stats.get("p50_ms", float("nan"))),
        p95_ms=float(stats.get("p95_ms", float("nan"))),
        p99_ms=float(stats.get("p99_ms", float("nan"))),
        server_cpu_s=round(server_cpu, 3),
        cpu_us_per_request=round(server_cpu / requests * 1e6, 2) if requests else float("nan"),
    )


def start_booking_rpc(msgpack: bool, uvloop: bool) -> Spawned:
    cmd = [sys.executable, "-m", "bench.echo_server", "--port", "0"]
    if msgpack:
        cmd += ["--msgpack-port", "0"]
    if not uvloop:
        cmd.append("--no-uvloop")
    return spawn_printing_port(cmd, cwd=Path(__file__).resolve().parents[1])


def start_nest() -> Spawned:
    ensure_node_modules()
    return spawn_printing_port(["node", str(INTEROP / "nest_server.mjs"), "--port", "0"], cwd=INTEROP)


def run(opts: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    targets: list[tuple[str, str]] = [("booking-rpc json", "json"), ("booking-rpc msgpack", "msgpack")]
    if not opts.skip_nest:
        targets.append(("nestjs 12", "json"))
    for name, codec in targets:
        if name.startswith("nestjs"):
            server = start_nest()
            port = int(server.info["port"])  # type: ignore[call-overload]
        else:
            server = start_booking_rpc(codec == "msgpack", not opts.no_uvloop)
            key = "msgpack_port" if codec == "msgpack" else "port"
            port = int(server.info[key])  # type: ignore[call-overload]
        try:
            if opts.nest_client:
                if codec == "json":
                    results.append(nest_client_load(name, server, port, opts))
            else:
                results.append(python_load(name, server, port, codec, opts))
        finally:
            server.stop()
        print(f"  done: {name}", file=sys.stderr)
    return results


def print_table(results: list[Result]) -> None:
    nest = next((r for r in results if r.target.startswith("nestjs")), None)
    print(f"{'target':22} {'req/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'vs nest':>16}")
    for r in results:
        ratio = ""
        if nest and r is not nest and nest.rps and r.cpu_us_per_request:
            ratio = f"{r.rps / nest.rps:.2f}x rps {r.cpu_us_per_request / nest.cpu_us_per_request:.2f}x cpu"
        print(
            f"{r.target:22} {r.rps:>10.0f} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.cpu_us_per_request:>11.1f} {ratio:>16}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--nest-client", action="store_true", help="use the genuine NestJS client as load")
    parser.add_argument("--skip-nest", action="store_true", help="no NestJS baseline (no node)")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    opts = parser.parse_args(argv)
    results = run(opts)
    print_table(results)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_bytes(
            orjson.dumps(
                {
                    "bench": "transport",
                    # not the output path: results files name no path of the machine that wrote them
                    "options": {k: v for k, v in vars(opts).items() if k != "json"},
                    "results": [asdict(r) for r in results],
                },
                option=orjson.OPT_INDENT_2,
            )
        )


if __name__ == "__main__":
    main()
