"""The bench chart: results in, a self-contained page with the figures and SVG bars out."""

from __future__ import annotations

from typing import Any, cast

from bench.report import render_html, rows_from_results, summary_table

RESULTS = {
    "generated_at": "2026-11-24T20:00:00+00:00",
    "transport": {
        "results": [
            {
                "target": "booking-rpc json",
                "load": "python x2",
                "rps": 90426.0,
                "p50_ms": 1.37,
                "p95_ms": 2.29,
                "p99_ms": 3.18,
            },
            {
                "target": "nestjs 12",
                "load": "python x2",
                "rps": 76956.0,
                "p50_ms": 1.03,
                "p95_ms": 4.75,
                "p99_ms": 5.89,
            },
        ]
    },
    "reservations": {
        "results": [
            {
                "name": "rpc reservation.create",
                "concurrency": 8,
                "throughput": 2027.5,
                "p50_ms": 3.71,
                "p95_ms": 6.28,
                "p99_ms": 8.34,
            },
            {
                "name": "pgbench reservation.create",
                "concurrency": 8,
                "throughput": 3115.4,
                "p50_ms": 2.31,
                "p95_ms": 4.44,
                "p99_ms": 6.66,
            },
        ]
    },
    "events": {
        "offered_rate": 8000,
        "events_per_s": 7883.0,
        "lag_p50_ms": 30.08,
        "lag_p95_ms": 110.66,
        "lag_p99_ms": 177.95,
    },
}


def test_rows_pair_booking_rpc_with_its_baselines() -> None:
    rows = rows_from_results(RESULTS)
    assert [(r.target, r.baseline) for r in rows] == [
        ("booking-rpc json", False),
        ("nestjs 12", True),
        ("booking-rpc", False),
        ("pgbench", True),
        ("booking-rpc relay", False),
    ]
    assert rows[2].scenario == "reservation.create c=8"


def test_page_has_charts_and_every_figure() -> None:
    page = render_html(RESULTS)
    assert page.count("<svg") == 4
    for text in ("90,426.00", "3,115.4", "reservation.create c=8", "events to NestJS", "177.95"):
        assert text in page
    assert "<script" not in page  # self-contained and static


def test_missing_bench_is_left_out() -> None:
    partial = {"transport": RESULTS["transport"], "reservations": None, "events": None}
    assert len(rows_from_results(partial)) == 2
    assert "nestjs 12" in summary_table(partial)


def test_split_cores_run_is_labelled_apart() -> None:
    split = {
        "results": [
            {**r, "throughput": r["throughput"] / 2}
            for r in RESULTS["reservations"]["results"]  # type: ignore[index]
        ]
    }
    rows = rows_from_results({**RESULTS, "reservations_split": split})
    scenarios = [r.scenario for r in rows if r.target in ("booking-rpc", "pgbench")]
    assert scenarios == [
        "reservation.create c=8",
        "reservation.create c=8",
        "reservation.create c=8, db own core",
        "reservation.create c=8, db own core",
    ]
    assert [r.throughput for r in rows if r.scenario.endswith("db own core")] == [2027.5 / 2, 3115.4 / 2]


def test_summary_says_which_targets_are_met() -> None:
    shared = {
        "levels": [1, 32],
        "ratios": [
            {"pattern": "reservation.create", "concurrency": 1, "ratio": 0.81},
            {"pattern": "slots.find", "concurrency": 32, "ratio": 0.73},
        ],
        "cpu_ratios": [
            {
                "pattern": "reservation.create",
                "run": "c=1",
                "service_cpu_ms": 0.25,
                "postgres_cpu_ms": 0.5,
                "ratio": 0.5,
            },
            {"pattern": "slots.find", "run": "c=1", "service_cpu_ms": 0.2, "postgres_cpu_ms": 0.8, "ratio": 0.25},
            {
                "pattern": "reservation.create",
                "run": "half load",
                "service_cpu_ms": 0.1,
                "postgres_cpu_ms": 0.5,
                "ratio": 0.2,
            },
        ],
        "half_load": {
            "saturation": 2000.0,
            "result": {"p50_ms": 1.5, "p99_ms": 4.25},
            "pgbench": {"p50_ms": 1.0, "p99_ms": 3.5},
        },
        "find_scaling": {"growth_p50": 1.18, "big_slots": 1_000_000},
    }
    split = {
        "levels": [1, 32],
        "split_cores": {"database_cores": [1], "client_cores": [0]},
        "ratios": [
            {"pattern": "slots.find", "concurrency": 1, "ratio": 0.8},
            {"pattern": "slots.find", "concurrency": 32, "ratio": 0.96},
        ],
        "added_p50": [
            {"pattern": "slots.find", "concurrency": 1, "ms": 0.21},
            {"pattern": "slots.find", "concurrency": 32, "ms": 3.0},
        ],
    }
    reservations: dict[str, Any] = {**cast(dict[str, Any], RESULTS["reservations"]), **shared}
    text = summary_table({**RESULTS, "reservations": reservations, "reservations_split": split})
    assert "targets, all on shared cores:" in text and "targets, PostgreSQL on its own cores:" in text
    # issue 4's throughput ratios are figures now; issue 21's c=32 ratio is a target on its own cores only
    assert "reservation.create   c=1   0.810x pgbench\n" in text
    assert "slots.find           c=32  0.730x pgbench\n" in text
    assert "slots.find           c=1   0.800x pgbench\n" in text
    assert "slots.find           c=32  0.960x pgbench (target >= 0.95x, PostgreSQL on its own cores): met" in text
    assert (
        "slots.find           c=1   p50 +0.210 ms over pgbench's (target <= 0.15 ms, PostgreSQL on its own cores): not met"
        in text
    )
    assert "c=32  p50" not in text
    assert (
        "reservation.create   c=1       service CPU 0.250 ms per op = 0.50x PostgreSQL's 0.500 ms (target <= 0.35x): not met"
        in text
    )
    assert "slots.find           c=1       service CPU 0.200 ms per op = 0.25x PostgreSQL's 0.800 ms\n" in text
    assert (
        "reservation.create   half load service CPU 0.100 ms per op = 0.20x PostgreSQL's 0.500 ms (target <= 0.35x): met"
        in text
    )
    assert (
        "reservation.create at 50% of saturation (1000 of 2000 ops/s, open loop): p50 1.50 ms, p99 4.25 ms "
        "(target <= 10 ms): met" in text
    )
    assert "pgbench reservation.create at the same rate (-R): p50 1.00 ms, p99 3.50 ms" in text
    assert "slots.find 10k -> 1000000 slots: p50 x1.18 (target <= 1.5x): met" in text


def test_tracing_figures_say_met_or_not_met() -> None:
    tracing = {
        "results": [
            {"pattern": "slots.find", "concurrency": 1, "off_cpu_us": 100.0, "off_again_cpu_us": 103.0}
            | {"on_cpu_us": 115.0, "noise": 0.03, "on_extra": 0.134, "spans_per_request": 2.0}
            | {"unsampled_cpu_us": 107.0, "unsampled_extra": 0.054},
            {"pattern": "reservation.create", "concurrency": 1, "off_cpu_us": 120.0, "off_again_cpu_us": 118.0}
            | {"on_cpu_us": 150.0, "noise": 0.017, "on_extra": 0.26},
        ],
        "column_default": {"with_default_us": 2.01, "without_default_us": 2.0, "non_null": 0},
        "sdk": {"span_us": 5.0, "encode_us": 2.0},
        "off_path": {
            "tracing_enabled": False,
            "middleware": ["authenticate", "deadline"],
            "tracing_middleware": False,
            "plain_connections": True,
        },
        "exported": {
            "requests": 3,
            "spans": 40,
            "bytes": 1000,
            "spans_per_request": {"booking.slots.find": 2.0},
            "child_spans": {"booking.slots.find": ["slots.find"]},
        },
    }
    table = summary_table({"tracing": tracing})
    assert (
        "slots.find           c=1   tracing on  115.0 µs CPU per request, +13.4% over off (target <= +20%): met"
        in table
    )
    assert "+26.0% over off (target <= +20%): NOT MET" in table
    assert "3.0% apart" in table
    assert (
        "slots.find           c=1   tracing on, none sampled: 107.0 µs CPU per request, +5.4% over off (booking_rpc's "
        "tracing code and the SDK's sampling decision); recording and exporting the spans adds 8.0 µs in the "
        "service (4.0 µs per span)" in table
    )
    assert "2.01 µs per row with the trace_context default, 2.00 without" in table
    assert "2.0 spans per request x (5.0 µs to start and end + 2.0 µs to export) = 14.0 µs, +13.8% over off" in table
    assert (
        "tracing off costs nothing: no tracing middleware (the router's: authenticate, deadline), untraced (db.pool.ServiceConnection) connections: met"
        in table
    )
    assert "40 spans, 1,000 bytes; spans per trace: booking.slots.find 2.0 (slots.find)" in table
    # the floor uses the export the "on" services ran: booking_rpc.otlp's when measured
    tracing["sdk"] |= {"http_export_us": 4.0, "own_encode_us": 0.5, "own_http_export_us": 1.0}
    table = summary_table({"tracing": tracing})
    assert "2.0 spans per request x (5.0 µs to start and end + 1.0 µs to export) = 12.0 µs, +11.8% over off" in table
    assert "the SDK's span objects alone (no exporter can remove them): 10.0 µs, +9.9%" in table
    assert "booking_rpc.otlp's (what otlp over http/protobuf uses): 0.5 µs to encode (1.0 µs with the HTTP" in table


def peer_comparison(pattern: str, concurrency: int, rps: tuple[float, float], cpu_ratio: float) -> dict[str, Any]:
    by = dict(zip(("booking-rpc", "nestjs peer"), rps, strict=True))
    return {
        "pattern": pattern,
        "concurrency": concurrency,
        "rps": by,
        "p50_ms": dict.fromkeys(by, 1.0),
        "p99_ms": dict.fromkeys(by, 2.0),
        "server_cpu_us": {"booking-rpc": 100 * cpu_ratio, "nestjs peer": 100.0},
        "postgres_cpu_us": dict.fromkeys(by, 600.0),
        "rps_ratio": rps[0] / rps[1],
        "cpu_ratio": cpu_ratio,
    }


def test_nestjs_peer_targets_per_transport() -> None:
    tcp = [
        peer_comparison("booking.slots.find", 1, (600, 400), 0.3),
        peer_comparison("booking.slots.find", 16, (900, 500), 0.35),
        peer_comparison("booking.reservation.create", 16, (700, 600), 0.6),
    ]
    nats = [peer_comparison("booking.slots.find", 16, (600, 480), 0.5)]
    text = summary_table({**RESULTS, "peer": {"tcp": {"comparisons": tcp}, "nats": {"comparisons": nats}}})
    assert "booking.slots.find over TCP, c=1: 1.50x the NestJS peer's req/s, 0.30x" in text
    assert "(no target at this level)" in text
    assert (
        "booking.slots.find over TCP, c=16: 1.80x the NestJS peer's req/s (target >= 1.5x): met; "
        "0.35x its server CPU per request (target <= 0.4x): met"
    ) in text
    assert "create over TCP, c=16: 1.17x the NestJS peer's req/s (target >= 1.5x): not met; 0.60x" in text
    assert "(target <= 0.4x): not met" in text
    assert "the CPU target needs <= 40 µs per request of booking-rpc (the peer spent 100); it spent 60" in text
    assert "a request costs this machine 660 µs of CPU under booking-rpc and 700 µs under the peer" in text
    assert "booking-rpc's req/s can reach at most 1.06x the peer's" in text
    assert "booking.slots.find over NATS, c=16: 1.25x the NestJS peer's req/s (target >= 1.2x): met" in text
    assert "slots.find c=16 TCP (NestJS client)" in [
        r.scenario for r in rows_from_results({"peer": {"tcp": {"comparisons": tcp}}})
    ]


def test_deadline_cost_says_met_or_not_met() -> None:
    def result(cost_us: float) -> dict[str, Any]:
        return {
            "isolated": {"cost_us": cost_us, "share_of_slots_find": round(cost_us / 200.0, 4)},
            "summary": {"booking.slots.find": {"us_without": 200.0}},
        }

    assert "5.0 µs of 200.0 µs, 2.5% met" in summary_table({"deadline": result(5.0)})
    assert "12.0 µs of 200.0 µs, 6.0% not met" in summary_table({"deadline": result(12.0)})


def test_flow_beside_the_peer_is_a_row_per_level_and_target() -> None:
    side = {"p50_ms": 10.0, "p99_ms": 30.0, "server_cpu_us": 900.0, "relay_cpu_us": 50.0, "postgres_cpu_us": 2000.0}
    summary = [
        {
            "concurrency": 16,
            "booking-rpc": {**side, "bookings_per_s": 120.0, "relay_cpu_us": 0.0, "delivered": "400/400"},
            "nestjs peer": {**side, "bookings_per_s": 100.0, "delivered": "330/330"},
            "ratio": 1.2,
        }
    ]
    results = {**RESULTS, "flow_peer": {"summary": summary}}
    text = summary_table(results)
    assert "the peer's events are delivered by booking-rpc's relay" in text
    assert "- c=16  booking-rpc    120.0 bookings/s, flow p50 10.0 ms, p99 30.0 ms, subscriber got 400/400" in text
    assert "(CPU µs/booking: server 900, relay 50, PostgreSQL 2000)" in text
    assert "- c=16  booking-rpc 1.2x the peer's bookings/s" in text
    scenarios = [(r.scenario, r.target, r.throughput) for r in rows_from_results(results)]
    assert ("hold+confirm+find c=16 (bookings/s)", "nestjs peer", 100.0) in scenarios


def test_jetstream_target_is_commit_to_stream_and_the_nestjs_subscriber_a_figure() -> None:
    stream_run = {
        "offered_rate": 6000.0,
        "measured": "commit -> stored in the stream",
        "events": 18000,
        "stream_messages": 18000,
        "stream_once_each": True,
        "events_per_s": 6022.0,
        "lag_p50_ms": 18.7,
        "lag_p95_ms": 53.2,
        "lag_p99_ms": 62.1,
    }
    with_nest = {
        **stream_run,
        "events_per_s": 4800.0,
        "lag_p99_ms": 1200.0,
        "nest_events_per_s": 4700.0,
        "nest_lag_p50_ms": 300.0,
        "nest_lag_p95_ms": 1300.0,
        "nest_lag_p99_ms": 1500.0,
    }
    results = {"events_jetstream": stream_run, "events_jetstream_nest": with_nest}
    text = summary_table(results)
    assert "- 6,022 events/s (target >= 5,000): met" in text
    assert "- lag p99 62 ms, commit -> stored in the stream (target < 1,000 ms): met" in text
    assert "- stream holds 18000 messages for 18000 events: once each" in text
    # the run with NestJS attached is below both targets, and says no target: it is not the target's run
    assert (
        "- with a NestJS ServerNats subscriber on the same cores (no target): 4,800 events/s to the stream, lag p99 "
        "1,200 ms; 4,700 events/s to NestJS, commit -> its handler p99 1,500 ms" in text
    )
    assert text.count("not met") == 0
    rows = [r for r in rows_from_results(results) if r.target == "booking-rpc relay"]
    assert [(r.scenario, r.throughput, r.p99_ms) for r in rows] == [
        ("events to JetStream (offered 6000/s; commit -> stored in the stream)", 6022.0, 62.1),
        ("events via JetStream to NestJS (offered 6000/s; commit -> NestJS handler)", 4700.0, 1500.0),
    ]
    # a stream holding a duplicate is not "once each", even when the counts happen to agree
    text = summary_table({"events_jetstream": {**stream_run, "stream_once_each": False}})
    assert "18000 messages for 18000 events: NOT once each" in text
    # a result from before the stream was measured (no "measured"): its lag was to a NestJS subscriber
    old = {k: v for k, v in stream_run.items() if k not in ("measured", "stream_once_each")}
    assert "- lag p99 62 ms, commit -> NestJS handler (target < 1,000 ms): met" in summary_table(
        {"events_jetstream": old}
    )
