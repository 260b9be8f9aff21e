"""What tracing costs the service: CPU per request with tracing off, and on with a batch OTLP exporter.

    python -m bench.tracing --concurrency 1 --duration 5 --rounds 3 [--json out.json]

Five booking-rpc processes on one database, served by the same code: two with tracing off (no OTEL_*
variables: no tracing middleware, the pool's own untraced connections; the request path is the one from before tracing
existed), one with tracing on (OTEL_TRACES_EXPORTER=otlp over http/protobuf, the SDK's
BatchSpanProcessor, to an OTLP sink in this process that answers 200), one the same but sampling
`--sampled` of the traces (parentbased_traceidratio) and one sampling none (what tracing costs before any
span is recorded). Each round runs `booking.reservation.create` and
`booking.slots.find` against all five, in an order that rotates per round; the figures are medians of
the rounds. The two "off" processes measure the noise on this machine (an A/A pair: the same code
twice); "on" is compared with the mean of them. CPU per request is the
service process's whole CPU (every thread, so the exporter's thread too) over the requests it answered.

The sink decodes what it receives and counts the spans of each trace by its root's name: spans per
request of each pattern. Then, in this process, what one SDK span costs to start and end, to encode for
OTLP and to export over http/protobuf; times the spans per request, that is what the SDK alone adds to a
request (printed beside each "on" figure: when it is already over the target, no change of ours can meet
it). Then what the outbox column default (migration 0035, which reads the session's
booking.trace_context) costs PostgreSQL when tracing is off: inserts into two copies of the outbox, with
and without the default, interleaved.

Targets (issue 19): off installs no tracing middleware and keeps the pool's own untraced connection class,
db.pool.ServiceConnection (checked on what the service builds with the "off" environment) and equals the A/A noise; on costs at most 20% more
service CPU per request, met or not per pattern and concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.report import tracing_target_lines
from bench.reservations import (
    Result,
    Service,
    create_request,
    find_request,
    line,
    median_of,
    run_load,
    seed,
    server_process,
)
from booking_rpc.config import Settings
from booking_rpc.db import scratch
from booking_rpc.db.pool import ServiceConnection
from booking_rpc.db.queries import Queries


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[int, Callable[[], dict[str, Any]]]]:
    """An OTLP/HTTP endpoint that takes every export (200, empty body) and counts requests, bytes and the
    spans of each trace by its root span's name (so: spans per request of each pattern); yields its port and
    what it has seen so far."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    seen: dict[str, Any] = {"requests": 0, "bytes": 0, "spans": 0}
    roots: dict[bytes, str] = {}
    spans_by_trace: collections.Counter[bytes] = collections.Counter()
    names_by_trace: dict[bytes, set[str]] = collections.defaultdict(set)
    lock = threading.Lock()

    class Sink(BaseHTTPRequestHandler):
        # keeps connections, as an OpenTelemetry Collector does (and both exporters measured here keep theirs)
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = ExportTraceServiceRequest.FromString(body)
            with lock:
                seen["requests"] += 1
                seen["bytes"] += len(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            seen["spans"] += 1
                            spans_by_trace[span.trace_id] += 1
                            if span.parent_span_id:
                                names_by_trace[span.trace_id].add(span.name)
                            else:
                                roots[span.trace_id] = span.name
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def summary() -> dict[str, Any]:
        per_root: dict[str, list[int]] = collections.defaultdict(list)
        children: dict[str, set[str]] = collections.defaultdict(set)
        with lock:
            for trace_id, name in roots.items():
                per_root[name].append(spans_by_trace[trace_id])
                children[name] |= names_by_trace[trace_id]
            return seen | {
                "spans_per_request": {name: statistics.mean(counts) for name, counts in per_root.items()},
                "child_spans": {name: sorted(names) for name, names in children.items()},
            }

    try:
        yield server.server_address[1], summary
    finally:
        server.shutdown()
        server.server_close()


def environment(sink_port: int | None, ratio: float | None = None) -> dict[str, str]:
    """Ours without any OTEL_* variable; with the sink's port, tracing on and exporting there (with `ratio`,
    sampling that share of the traces)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if sink_port is not None:
        env |= {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_SERVICE_NAME": "booking-rpc-bench",
        }
        if ratio is not None:
            env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    return env


async def column_default_cost(dsn: str, rows: int, rounds: int) -> dict[str, Any]:
    """µs per inserted outbox row with and without the trace_context default (tracing off: setting unset)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE with_default (LIKE booking_events_outbox INCLUDING DEFAULTS);"
            "CREATE TEMP TABLE without_default (LIKE booking_events_outbox INCLUDING DEFAULTS);"
            "ALTER TABLE without_default ALTER COLUMN trace_context DROP DEFAULT"
        )
        timings: dict[str, list[float]] = {"with_default": [], "without_default": []}
        for r in range(rounds):
            order = ("with_default", "without_default") if r % 2 == 0 else ("without_default", "with_default")
            for table in order:
                statement = (
                    f"INSERT INTO {table} (id, aggregate_type, aggregate_id, event_type, payload) "
                    "SELECT gen_random_uuid(), 'bench', gen_random_uuid(), 'bench.event', '{}'::jsonb "
                    f"FROM generate_series(1, {rows})"
                )
                started = time.perf_counter()
                await conn.execute(statement)
                timings[table].append((time.perf_counter() - started) / rows * 1e6)
                await conn.execute(f"TRUNCATE {table}")
        stored = await conn.fetchval("SELECT count(*) FROM with_default WHERE trace_context IS NOT NULL")
    finally:
        await conn.close()
    with_us, without_us = statistics.median(timings["with_default"]), statistics.median(timings["without_default"])
    return {
        "rows": rows,
        "with_default_us": with_us,
        "without_default_us": without_us,
        "rounds_with": timings["with_default"],
        "rounds_without": timings["without_default"],
        "non_null": stored,
    }


def sdk_costs(sink_port: int, spans: int = 20_000) -> dict[str, float]:
    """Where tracing's CPU goes, measured in this process: one SDK span started and ended as the service
    makes them (half server spans with their four attributes, half statement spans with two, under a batch
    processor with its default queue, exporter dropping), the OTLP protobuf encoding of one span, and one
    span's share of an http/protobuf export to the sink (encoding, the HTTP client; this thread's CPU only,
    not the sink's), each by the stock exporter and by booking_rpc.otlp's (the one `otlp` selects, so the
    one the "on" services use). The exporter thread does the last two for every span."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind, set_span_in_context

    from booking_rpc.otlp import OtlpHttpSpanExporter, SpanEncoder

    class Drop(SpanExporter):
        def export(self, batch: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    kept: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, batch: Any) -> SpanExportResult:
            kept.extend(batch)
            return SpanExportResult.SUCCESS

    server_attributes = {
        "rpc.system": "nestjs",
        "rpc.method": "booking.slots.find",
        "network.transport": "tcp",
        "booking.rpc.outcome": "ok",
    }
    statement_attributes = {"db.system.name": "postgresql", "db.query.summary": "slots.find"}

    def make(provider: TracerProvider, pairs: int) -> None:
        tracer = provider.get_tracer("bench")
        for _ in range(pairs):
            server = tracer.start_span("booking.slots.find", None, SpanKind.SERVER, server_attributes)
            parent = set_span_in_context(server)
            tracer.start_span("slots.find", parent, SpanKind.CLIENT, statement_attributes).end()
            server.end()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    make(provider, 1000)  # warm
    started = time.process_time()
    make(provider, spans // 2)
    span_us = (time.process_time() - started) / spans * 1e6
    provider.shutdown()

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    make(provider, 256)  # one default batch (512 spans)
    batch = kept[:512]
    rounds = max(1, spans // len(batch))
    encoder = SpanEncoder()
    costs = {"span_us": span_us}
    for key, encode in (
        ("encode_us", lambda: encode_spans(batch).SerializeToString()),
        ("own_encode_us", lambda: encoder.encode(batch)),
    ):
        started = time.process_time()
        for _ in range(rounds):
            encode()
        costs[key] = (time.process_time() - started) / (rounds * len(batch)) * 1e6
    rounds = max(1, rounds // 4)
    endpoint = f"http://127.0.0.1:{sink_port}/v1/traces"
    exporters: tuple[tuple[str, SpanExporter], ...] = (
        ("http_export_us", OTLPSpanExporter(endpoint=endpoint)),
        ("own_http_export_us", OtlpHttpSpanExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})),
    )
    for key, exporter in exporters:
        exporter.export(batch)  # connect
        started = time.thread_time()
        for _ in range(rounds):
            exporter.export(batch)
        costs[key] = (time.thread_time() - started) / (rounds * len(batch)) * 1e6
        exporter.shutdown()
    return costs


def off_path(sql: Queries) -> dict[str, Any]:
    """What the service builds with the "off" processes' environment: whether tracing is on, the router's
    middleware, and the pool's connection class (off costs nothing: no tracing middleware, the pool's own)."""
    from booking_rpc.app import service_router
    from booking_rpc.tracing import Tracing, TracingConfig, connection_class

    env = environment(None)
    router = service_router(Settings(), None)
    return {
        "tracing_enabled": TracingConfig.from_env(env).enabled,
        "middleware": [getattr(m, "__qualname__", type(m).__name__) for m in router.middleware],
        "tracing_middleware": any(isinstance(getattr(m, "__self__", None), Tracing) for m in router.middleware),
        "plain_connections": connection_class(None, sql) is ServiceConnection,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.concurrency.split(",")]
    sql = Queries.load()
    report: dict[str, Any] = {"levels": levels, "duration": args.duration, "rounds": args.rounds, "results": []}
    report["off_path"] = off_path(sql)
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    with scratch.server_dsn(database_url) as admin, otlp_sink() as (sink_port, exported):
        name = f"bench_trace_{secrets.token_hex(5)}"
        dsn = asyncio.run(scratch.create_database(admin, name, migrated=True))
        try:
            ds = asyncio.run(seed(dsn, sql))
            with contextlib.ExitStack() as stack:
                services: dict[str, Service] = {
                    "off": stack.enter_context(server_process(dsn, args.pool, environment(None))),
                    "on": stack.enter_context(server_process(dsn, args.pool, environment(sink_port))),
                    "off (again)": stack.enter_context(server_process(dsn, args.pool, environment(None))),
                    "on, sampled": stack.enter_context(
                        server_process(dsn, args.pool, environment(sink_port, args.sampled))
                    ),
                    # none sampled: what tracing costs before any span is recorded (our middleware, context,
                    # log ids and statement checks, the SDK's sampling decision); "on" less this is what the
                    # recorded spans and their export cost in the service itself
                    "on, none sampled": stack.enter_context(
                        server_process(dsn, args.pool, environment(sink_port, 0.0))
                    ),
                }
                for service in services.values():  # connections, plans, a table with rows
                    run_load("warm-up", service, 4, 1.0, create_request(ds))
                asyncio.run(scratch.admin(dsn, "ANALYZE reservations, booking_events_outbox"))
                print(f"tracing bench: database {name}, {args.duration}s per run, {args.rounds} rounds, OTLP sink")
                for c in levels:
                    for label, request in (
                        ("reservation.create", create_request(ds)),
                        ("slots.find", find_request(ds)),
                    ):
                        runs: dict[str, list[Result]] = {k: [] for k in services}
                        keys = list(services)
                        for r in range(args.rounds):
                            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:  # rotate who goes first
                                runs[key].append(run_load(f"{key} {label}", services[key], c, args.duration, request))
                        medians = {k: median_of(v) for k, v in runs.items()}
                        for result in medians.values():
                            print(line(result) + f"  CPU/op {result.service_cpu_ms * 1000:.1f} µs")
                        off = statistics.mean([medians["off"].service_cpu_ms, medians["off (again)"].service_cpu_ms])
                        noise = abs(medians["off (again)"].service_cpu_ms / medians["off"].service_cpu_ms - 1)
                        extra = medians["on"].service_cpu_ms / off - 1
                        report["results"].append(
                            {
                                "pattern": label,
                                "concurrency": c,
                                "off_cpu_us": medians["off"].service_cpu_ms * 1000,
                                "off_again_cpu_us": medians["off (again)"].service_cpu_ms * 1000,
                                "on_cpu_us": medians["on"].service_cpu_ms * 1000,
                                "noise": noise,
                                "on_extra": extra,
                                "sampled": args.sampled,
                                "sampled_cpu_us": medians["on, sampled"].service_cpu_ms * 1000,
                                "sampled_extra": medians["on, sampled"].service_cpu_ms / off - 1,
                                "unsampled_cpu_us": medians["on, none sampled"].service_cpu_ms * 1000,
                                "unsampled_extra": medians["on, none sampled"].service_cpu_ms / off - 1,
                                "runs": {k: [asdict(x) for x in v] for k, v in runs.items()},
                            }
                        )
            report["exported"] = exported()
            for r in report["results"]:  # what the SDK alone must cost per request: its spans
                r["spans_per_request"] = report["exported"]["spans_per_request"].get("booking." + r["pattern"])
            report["sdk"] = sdk_costs(sink_port)
            report["column_default"] = asyncio.run(column_default_cost(dsn, args.default_rows, 5))
        finally:
            asyncio.run(scratch.drop_database(admin, name))
    for text in tracing_target_lines(report):
        print(text)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", default="1", help="comma-separated concurrency levels")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the five services (medians)")
    p.add_argument("--sampled", type=float, default=0.1, help="share of traces the fourth service samples")
    p.add_argument("--default-rows", type=int, default=200_000, help="rows per insert in the column-default check")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--database-url", help="PostgreSQL server (default $DATABASE_URL, else embedded)")
    p.add_argument(
        "--pool",
        type=int,
        # five services x the service's default pool (20) would take every connection the embedded
        # PostgreSQL allows (100); the load never has more than max(--concurrency) statements in flight
        default=16,
        help="each service's pool size (default 16)",
    )
    args = p.parse_args(argv)
    report = bench(args)
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
