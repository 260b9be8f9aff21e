"""`python -m bench`: the transport, reservations, NestJS peer, events, NATS, tracing, deadline and flows benches in one run, a JSON file and a chart.

The reservations bench runs twice: all on shared cores, then with PostgreSQL on cores of its own
(`--split-cores`). Writes bench/results/latest.json and bench/results/latest.html (inline SVG) and prints a
short table, ending with each target and whether the run met it.
`--full` runs each bench longer. Uses DATABASE_URL when set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.report import render_html, summary_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def steps(full: bool) -> list[tuple[str, list[str]]]:
    d = "10" if full else "3"
    return [
        ("transport", ["-m", "bench.transport", "--duration", d, "--warmup", "1"]),
        (
            "reservations",
            [
                "-m",
                "bench.reservations",
                "--concurrency",
                "1,8,32",
                "--duration",
                d,
                *([] if full else ["--skip-big"]),
            ],
        ),
        # the same comparison with PostgreSQL on cores of its own, as on a database host of its own
        (
            "reservations_split",
            ["-m", "bench.reservations", "--split-cores", "--concurrency", "1,8,32", "--duration", d, "--skip-big"],
        ),
        # booking-rpc beside the NestJS 12 microservice doing the same work (bench/nest_peer/), same SQL
        ("peer", ["-m", "bench.peer", "--concurrency", "1,16", "--duration", d, "--rounds", "3" if full else "2"]),
        ("events", ["-m", "bench.events", "--rate", "6000", "--duration", d]),
        ("nats", ["-m", "bench.nats", "--duration", d, "--rounds", "3" if full else "2"]),
        # issue 16's target: commit -> stored in the stream; then the same with a NestJS ServerNats subscriber
        # attached (a figure: it shares the 2 cores, and is not part of the target)
        ("events_jetstream", ["-m", "bench.events", "--sink", "jetstream", "--rate", "6000", "--duration", d]),
        (
            "events_jetstream_nest",
            ["-m", "bench.events", "--sink", "jetstream", "--nest-subscriber", "--rate", "6000", "--duration", d],
        ),
        ("tracing", ["-m", "bench.tracing", "--concurrency", "1,8", "--duration", d]),
        # what the always-on request deadline costs per request
        ("deadline", ["-m", "bench.deadline", "--rounds", "30" if full else "20"]),
        # hold -> confirm -> find end to end with a NestJS subscriber, booking-rpc beside the NestJS peer
        (
            "flow_peer",
            ["-m", "bench.flow_peer", "--concurrency", "1,16,64", "--duration", d, "--rounds", "2"],
        ),
        # hold+confirm with and without a NestJS subscriber: what events cost the writes
        ("flows", ["-m", "bench.flows", "--concurrency", "24", "--duration", d, "--rounds", "2"]),
    ]


def run(full: bool, out_dir: Path = RESULTS) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    plan = steps(full)
    for i, (name, args) in enumerate(plan, 1):
        target = out_dir / f"{name}.json"
        print(f"[{i}/{len(plan)}] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, *args, "--json", str(target)], cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - started
        if done.returncode != 0 or not target.exists():
            print(f"      {name} failed after {took:.0f}s:\n{done.stderr[-2000:]}", file=sys.stderr)
            results[name] = None
            continue
        print(f"      done in {took:.0f}s", file=sys.stderr, flush=True)
        results[name] = orjson.loads(target.read_bytes())
    (out_dir / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out_dir / "latest.html").write_text(render_html(results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="longer runs, and slots.find at 1M slots")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)
    results = run(opts.full, opts.out)
    print(summary_table(results))
    print(f"\nchart: {opts.out / 'latest.html'}  data: {opts.out / 'latest.json'}")
    return 0 if all(results.get(name) for name, _ in steps(opts.full)) else 1
