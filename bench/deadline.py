"""What the request deadline costs: CPU per request with and without the deadline middleware.

Two measurements in this process, rounds interleaving with and without:

- the middleware alone: a route whose handler suspends twice without I/O (as a query's send and reply
  do), so the difference is the middleware's own CPU, precise to a fraction of a µs;
- `echo` and `booking.slots.find` through the router as the service builds it (`service_router(settings)`,
  every middleware the defaults install) and the same router without the deadline, on one database. Each
  request is what the TCP protocol makes of one: a `Call` and a Task running `route.invoke` (echo's eager
  route too, which the middleware passes straight on). A third variant carries a caller's shorter `timeout`
  in its metadata. On a shared machine slots.find's CPU swings by more than the middleware costs: its
  figures show the size of a request, the isolated figure the cost.

CPU per request is this process's CPU time over the requests (PostgreSQL's work is not in it); figures are
medians of the rounds, and a cost is the median of each round's own difference (with − without).

Target (this bench's own; issue 17 asks only that it be measured and cheap): the middleware's CPU per
request at most 5% of a `booking.slots.find`'s.

    python -m bench.deadline --requests 300 --rounds 30 [--json out.json]   (DATABASE_URL or embedded)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import alternating, write_json
from bench.report import deadline_target_lines
from bench.reservations import find_request, seed
from booking_rpc.app import build_context, service_router
from booking_rpc.config import Settings
from booking_rpc.db.pool import create_pool
from booking_rpc.db.queries import Queries
from booking_rpc.db.scratch import create_database, drop_database, server_dsn
from booking_rpc.deadline import deadline_middleware
from booking_rpc.loop import new_event_loop
from booking_rpc.router import Call, Route, Router

VARIANTS = ("with", "without", "caller_timeout")


def without_deadline(router: Router) -> Router:
    """The router with the deadline middleware taken out (its routes share the middleware list)."""
    name = deadline_middleware(1.0).__qualname__
    router.middleware[:] = [m for m in router.middleware if getattr(m, "__qualname__", "") != name]
    return router


async def cpu_per_request(
    router: Router, ctx: Any, pattern: str, payload: Callable[[], Any], requests: int, metadata: Any
) -> float:
    """µs of this process's CPU per request, each one a Call and a Task as the TCP protocol makes them."""
    route = router.lookup(pattern)
    assert route is not None, pattern
    loop = asyncio.get_running_loop()
    bodies = [payload() for _ in range(requests)]
    started = time.process_time()
    for body in bodies:
        await loop.create_task(route.invoke(body, ctx, Call("tcp", metadata)))
    return (time.process_time() - started) / requests * 1e6


def isolated_route(with_deadline: bool) -> Route:
    """A route whose handler suspends twice and does nothing else, under the deadline or not."""
    router = Router()

    @router.message("bench.suspend")
    async def suspend(payload: Any, ctx: Any) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return 1

    if with_deadline:
        router.use(deadline_middleware(Settings().request_timeout))
    route = router.lookup("bench.suspend")
    assert route is not None
    return route


async def isolated_cost(rounds: int, requests: int) -> dict[str, Any]:
    """µs of CPU per request the middleware adds to a handler that does nothing."""
    routes = {"with": isolated_route(True), "without": isolated_route(False)}
    loop = asyncio.get_running_loop()
    samples: dict[str, list[float]] = {"with": [], "without": []}
    for round_no in range(rounds):
        for variant in ("with", "without") if round_no % 2 == 0 else ("without", "with"):
            route = routes[variant]
            started = time.process_time()
            for _ in range(requests):
                await loop.create_task(route.invoke(None, None, Call("tcp")))
            samples[variant].append((time.process_time() - started) / requests * 1e6)
    return {
        "us_with": round(statistics.median(samples["with"]), 2),
        "us_without": round(statistics.median(samples["without"]), 2),
        "cost_us": round(statistics.median(a - b for a, b in zip(samples["with"], samples["without"], strict=True)), 2),
    }


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    isolated = await isolated_cost(opts.rounds, opts.requests * 10)
    with server_dsn(os.environ.get("DATABASE_URL")) as base:
        name = f"bench_deadline_{uuid.uuid4().hex[:8]}"
        dsn = await create_database(base, name, migrated=True)
        try:
            sql = Queries.load()
            ds = await seed(dsn, sql)
            settings = Settings()
            pool = await create_pool(dsn, min_size=1, max_size=2)
            try:
                ctx = build_context(settings, pool)
                routers = {"with": service_router(settings), "without": without_deadline(service_router(settings))}
                metadata = {"with": None, "without": None, "caller_timeout": {"timeout": "5000"}}
                patterns: dict[str, Callable[[], Any]] = {
                    "echo": lambda: {"note": "bench"},
                    "booking.slots.find": lambda: find_request(ds)()[1],
                }
                samples: dict[str, dict[str, list[float]]] = {p: {v: [] for v in VARIANTS} for p in patterns}
                for pattern, payload in patterns.items():
                    # warm the plans and caches first
                    await cpu_per_request(routers["with"], ctx, pattern, payload, 200, None)
                    for round_no in range(opts.rounds):
                        for variant in alternating(VARIANTS, round_no):
                            router = routers["without" if variant == "without" else "with"]
                            us = await cpu_per_request(router, ctx, pattern, payload, opts.requests, metadata[variant])
                            samples[pattern][variant].append(us)
            finally:
                await pool.close()
        finally:
            await drop_database(base, name)
    summary: dict[str, Any] = {}
    for pattern, by_variant in samples.items():
        med = {v: statistics.median(xs) for v, xs in by_variant.items()}
        # the cost is the median of each round's own difference: neighbouring runs share the machine's load
        cost = statistics.median(a - b for a, b in zip(by_variant["with"], by_variant["without"], strict=True))
        summary[pattern] = {
            "us_with": round(med["with"], 2),
            "us_without": round(med["without"], 2),
            "us_caller_timeout": round(med["caller_timeout"], 2),
            "cost_us": round(cost, 2),
            "cost_share": round(cost / med["without"], 4) if med["without"] else 0.0,
            "rounds": {v: [round(x, 1) for x in xs] for v, xs in by_variant.items()},
        }
    find_us = summary["booking.slots.find"]["us_without"]
    isolated["share_of_slots_find"] = round(isolated["cost_us"] / find_us, 4) if find_us else 0.0
    return {
        "bench": "deadline",
        "requests": opts.requests,
        "rounds": opts.rounds,
        "isolated": isolated,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per pattern, variant and round")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(opts))
    iso = result["isolated"]
    print(
        f"{'middleware alone':>20}: {iso['us_with']} µs CPU/request with the deadline, {iso['us_without']} without "
        f"(cost {iso['cost_us']} µs)"
    )
    for pattern, s in result["summary"].items():
        print(
            f"{pattern:>20}: {s['us_with']} µs CPU/request with the deadline, {s['us_without']} without "
            f"(cost {s['cost_us']} µs, {s['cost_share']:.1%}); a caller's timeout {s['us_caller_timeout']} µs"
        )
    print("\n".join(["targets:", *deadline_target_lines(result)]))
    write_json(opts.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
