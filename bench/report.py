"""Bench results → one self-contained HTML page with inline SVG charts (no plotting dependency)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from bench.nats import Round
from bench.nats import target_lines as nats_target_lines

COLORS = {"booking-rpc": "#2b6cb0", "baseline": "#a0aec0"}
# issue 4: slots.find's latency growth 10k -> 1M slots
FIND_GROWTH_TARGET = 1.5
# issue 21: the service's CPU per reservation.create over PostgreSQL's; create's p99 at half of saturation;
# with PostgreSQL on its own cores, both patterns' throughput over pgbench's at c=32 and the p50 added at c=1
CPU_RATIO_TARGET = 0.35
HALF_LOAD_P99_TARGET_MS = 10.0
SPLIT_RATIO_TARGET = 0.95
ADDED_P50_TARGET_MS = 0.15
# issue 19: tracing on (batch exporter) costs at most this much more service CPU per request than off
TRACING_CPU_TARGET = 0.20
# issue 16: JetStream delivery
EVENTS_RATE_TARGET, EVENTS_LAG_TARGET_MS = 5000, 1000
# booking-rpc over the NestJS peer (bench.peer), at PEER_TARGET_CONCURRENCY: (req/s at least, server CPU per
# request at most); issue 21 §1 over TCP (both patterns), issue 16 for slots.find over NATS
PEER_TARGETS = {"TCP": (1.5, 0.4), "NATS": (1.2, 0.6)}
PEER_TARGET_CONCURRENCY = 16
DEADLINE_SHARE_TARGET = 0.05  # bench.deadline: of a slots.find's CPU per request
RESERVATION_RUNS = (("reservations", "all on shared cores"), ("reservations_split", "PostgreSQL on its own cores"))


@dataclass(frozen=True)
class Row:
    """One bar group: a scenario measured for booking-rpc or for its baseline."""

    scenario: str
    target: str
    baseline: bool
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def rows_from_results(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in (results.get("transport") or {}).get("results", []):
        rows.append(
            Row(
                f"transport echo ({r['load']})",
                r["target"],
                r["target"].startswith("nestjs"),
                r["rps"],
                r["p50_ms"],
                r["p95_ms"],
                r["p99_ms"],
            )
        )
    for key, where in (("reservations", ""), ("reservations_split", ", db own core")):
        for r in (results.get(key) or {}).get("results", []):
            name = str(r["name"])
            who, _, pattern = name.partition(" ")
            target = "pgbench" if who == "pgbench" else "booking-rpc"
            rows.append(
                Row(
                    f"{pattern or name} c={r['concurrency']}{where}",
                    target,
                    target != "booking-rpc",
                    r["throughput"],
                    r["p50_ms"],
                    r["p95_ms"],
                    r["p99_ms"],
                )
            )
    # (result, its figures' prefix, what the lag is measured to): the JetStream run measures commit -> stream
    # (results from before it did, without "measured", were commit -> a NestJS subscriber of the stream)
    events_runs = (
        ("events", "", "events to NestJS"),
        ("events_jetstream", "", "events to JetStream"),
        ("events_jetstream_nest", "nest_", "events via JetStream to NestJS"),
    )
    for key, prefix, what in events_runs:
        ev = results.get(key)
        if ev and f"{prefix}events_per_s" in ev:
            rows.append(
                Row(
                    f"{what} (offered {ev['offered_rate']:.0f}/s; {events_measured(ev, prefix)})",
                    "booking-rpc relay",
                    False,
                    ev[f"{prefix}events_per_s"],
                    ev[f"{prefix}lag_p50_ms"],
                    ev[f"{prefix}lag_p95_ms"],
                    ev[f"{prefix}lag_p99_ms"],
                )
            )
    peer = results.get("peer") or {}
    for where in ("tcp", "nats"):
        for c in (peer.get(where) or {}).get("comparisons", []):
            for target, rps in c["rps"].items():
                rows.append(
                    Row(
                        f"{c['pattern'].removeprefix('booking.')} c={c['concurrency']} {where.upper()} (NestJS client)",
                        target,
                        target != "booking-rpc",
                        rps,
                        c["p50_ms"][target],
                        float("nan"),
                        c["p99_ms"][target],
                    )
                )
    for row in (results.get("flow_peer") or {}).get("summary", []):
        for target in ("booking-rpc", "nestjs peer"):
            s = row[target]
            rows.append(
                Row(
                    f"hold+confirm+find c={row['concurrency']} (bookings/s)",
                    target,
                    target != "booking-rpc",
                    s["bookings_per_s"],
                    s["p50_ms"],
                    float("nan"),
                    s["p99_ms"],
                )
            )
    for r in (results.get("nats") or {}).get("results", []):
        rows.append(
            Row(
                f"echo over NATS x{r['processes']} (ClientNats)",
                r["target"],
                r["target"].startswith("nestjs"),
                r["rps"],
                r["p50_ms"],
                float("nan"),
                r["p99_ms"],
            )
        )
    return rows


def events_measured(ev: dict[str, Any], prefix: str = "") -> str:
    """What an events run's lag (or its `prefix`ed figures') measures: to the stream, or to a NestJS handler."""
    return "commit -> NestJS handler" if prefix == "nest_" else str(ev.get("measured", "commit -> NestJS handler"))


def events_target_lines(ev: dict[str, Any]) -> list[str]:
    """Issue 16's delivery targets for one events run (JetStream: the lag commit -> stored in the stream)."""
    if not ev:
        return []
    rate, p99 = ev["events_per_s"], ev["lag_p99_ms"]
    lines = [
        f"- {rate:,.0f} events/s (target >= {EVENTS_RATE_TARGET:,}): {'met' if rate >= EVENTS_RATE_TARGET else 'not met'}",
        f"- lag p99 {p99:,.0f} ms, {events_measured(ev)} (target < {EVENTS_LAG_TARGET_MS:,} ms): "
        f"{'met' if p99 < EVENTS_LAG_TARGET_MS else 'not met'}",
    ]
    if "stream_messages" in ev:
        once = ev.get("stream_once_each", ev["stream_messages"] == ev["events"])
        lines.append(
            f"- stream holds {ev['stream_messages']} messages for {ev['events']} events: {'once each' if once else 'NOT once each'}"
        )
    return lines


def events_nest_lines(ev: dict[str, Any]) -> list[str]:
    """A JetStream run with a NestJS ServerNats subscriber attached: figures without a target."""
    if not ev or "nest_events_per_s" not in ev:
        return []
    return [
        f"- with a NestJS ServerNats subscriber on the same cores (no target): {ev['events_per_s']:,.0f} events/s "
        f"to the stream, lag p99 {ev['lag_p99_ms']:,.0f} ms; {ev['nest_events_per_s']:,.0f} events/s to NestJS, "
        f"commit -> its handler p99 {ev['nest_lag_p99_ms']:,.0f} ms"
    ]


def peer_target_lines(comparisons: list[dict[str, Any]], where: str) -> list[str]:
    """bench.peer's targets over `where` (TCP or NATS), one line per pattern with met / not met at the target
    concurrency; the other levels' ratios are printed without a target."""
    rps_target, cpu_target = PEER_TARGETS[where]
    lines = []
    for c in comparisons:
        head = f"{c['pattern']} over {where}, c={c['concurrency']}:"
        if c["concurrency"] != PEER_TARGET_CONCURRENCY:
            lines.append(
                f"{head} {c['rps_ratio']:.2f}x the NestJS peer's req/s, {c['cpu_ratio']:.2f}x its server CPU per "
                "request (no target at this level)"
            )
            continue
        rps_ok, cpu_ok = c["rps_ratio"] >= rps_target, c["cpu_ratio"] <= cpu_target
        lines.append(
            f"{head} {c['rps_ratio']:.2f}x the NestJS peer's req/s (target >= {rps_target}x): "
            f"{'met' if rps_ok else 'not met'}; {c['cpu_ratio']:.2f}x its server CPU per request "
            f"(target <= {cpu_target}x): {'met' if cpu_ok else 'not met'}"
        )
        ours_cpu, peer_cpu = c["server_cpu_us"]["booking-rpc"], c["server_cpu_us"]["nestjs peer"]
        if not cpu_ok:
            lines.append(
                f"  the CPU target needs <= {peer_cpu * cpu_target:.0f} µs per request of booking-rpc "
                f"(the peer spent {peer_cpu:.0f}); it spent {ours_cpu:.0f}"
            )
        pg = c.get("postgres_cpu_us", {})
        if not rps_ok and len(pg) == 2 and all(v == v for v in pg.values()):  # nan: PostgreSQL elsewhere
            ours, peer = ours_cpu + pg["booking-rpc"], peer_cpu + pg["nestjs peer"]
            lines.append(
                f"  a request costs this machine {ours:.0f} µs of CPU under booking-rpc and {peer:.0f} µs under the "
                f"peer (server + PostgreSQL; PostgreSQL runs the same SQL for both: {pg['booking-rpc']:.0f} vs "
                f"{pg['nestjs peer']:.0f} µs), so while the shared cores are the limit booking-rpc's req/s can "
                f"reach at most {peer / ours:.2f}x the peer's"
            )
    return lines


def flow_peer_lines(summary: list[dict[str, Any]]) -> list[str]:
    """bench.flow_peer's summary: one line per level and target (medians), then booking-rpc's bookings/s over the
    peer's (no target: issue 21 §4 asks for the row beside the peer's)."""
    lines = []
    for row in summary:
        for t in ("booking-rpc", "nestjs peer"):
            s = row[t]
            lines.append(
                f"- c={row['concurrency']:<3} {t:<12} {s['bookings_per_s']:7.1f} bookings/s, flow p50 {s['p50_ms']} ms, "
                f"p99 {s['p99_ms']} ms, subscriber got {s['delivered']} (CPU µs/booking: server {s['server_cpu_us']:.0f}"
                + (f", relay {s['relay_cpu_us']:.0f}" if t != "booking-rpc" else "")
                + f", PostgreSQL {s['postgres_cpu_us']:.0f})"
            )
        lines.append(f"- c={row['concurrency']:<3} booking-rpc {row['ratio']}x the peer's bookings/s")
    return lines


def bar_chart(title: str, rows: list[Row], value: str, unit: str) -> str:
    """Horizontal bars, one per row, labelled with scenario, target and value."""
    bar_h, gap, left, width = 18, 6, 360, 420
    top = 30
    height = top + len(rows) * (bar_h + gap) + 10
    peak = max((getattr(r, value) for r in rows), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{height}" role="img">',
        f'<text x="0" y="18" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        v = float(getattr(r, value))
        w = max(1.0, width * v / peak)
        color = COLORS["baseline" if r.baseline else "booking-rpc"]
        label = html.escape(f"{r.scenario} · {r.target}")
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="12">{v:,.2f} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(results: dict[str, Any]) -> str:
    rows = rows_from_results(results)
    table = "".join(
        f"<tr><td>{html.escape(r.scenario)}</td><td>{html.escape(r.target)}</td><td>{r.throughput:,.1f}</td>"
        f"<td>{r.p50_ms:.2f}</td><td>{r.p95_ms:.2f}</td><td>{r.p99_ms:.2f}</td></tr>"
        for r in rows
    )
    charts = "".join(
        f"<div>{bar_chart(t, rows, v, u)}</div>"
        for t, v, u in (
            ("Throughput (req/s, ops/s, events/s)", "throughput", "/s"),
            ("p50 latency", "p50_ms", "ms"),
            ("p95 latency", "p95_ms", "ms"),
            ("p99 latency", "p99_ms", "ms"),
        )
    )
    when = html.escape(str(results.get("generated_at", "")))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>booking-rpc bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,td:nth-child(2){text-align:left}"
        "</style></head><body>"
        f"<h1>booking-rpc bench</h1><p>{when} · blue: booking-rpc, grey: baseline (NestJS 12, pgbench)</p>"
        f"{charts}<h2>Figures</h2><table><tr><th>scenario</th><th>target</th><th>throughput/s</th>"
        f"<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>{table}</table></body></html>\n"
    )


def met_or_not(ok: bool) -> str:
    return "met" if ok else "not met"


def target_lines(reservations: dict[str, Any]) -> list[str]:
    """One line per figure of a reservations bench report, with issue 21's target and met / not met where it
    has one (issue 4's c=1 throughput targets are retired: those ratios are figures only)."""
    lines = []
    split = isinstance(reservations.get("split_cores"), dict)
    top = max(reservations.get("levels") or [0])
    for r in reservations.get("ratios", []):
        text = f"{r['pattern']:<20} c={r['concurrency']:<3} {r['ratio']:.3f}x pgbench"
        if split and r["concurrency"] == top:
            text += f" (target >= {SPLIT_RATIO_TARGET}x, PostgreSQL on its own cores): {met_or_not(r['ratio'] >= SPLIT_RATIO_TARGET)}"
        lines.append(text)
    for r in reservations.get("added_p50", []):
        if r["concurrency"] == 1:
            text = f"{r['pattern']:<20} c=1   p50 {r['ms']:+.3f} ms over pgbench's"
            if split:
                text += f" (target <= {ADDED_P50_TARGET_MS} ms, PostgreSQL on its own cores): {met_or_not(r['ms'] <= ADDED_P50_TARGET_MS)}"
            lines.append(text)
    for r in reservations.get("cpu_ratios", []):
        text = (
            f"{r['pattern']:<20} {r['run']:<9} service CPU {r['service_cpu_ms']:.3f} ms per op = "
            f"{r['ratio']:.2f}x PostgreSQL's {r['postgres_cpu_ms']:.3f} ms"
        )
        if r["pattern"] == "reservation.create":
            text += f" (target <= {CPU_RATIO_TARGET}x): {met_or_not(r['ratio'] <= CPU_RATIO_TARGET)}"
        lines.append(text)
    half = reservations.get("half_load")
    if half:
        p99 = half["result"]["p99_ms"]
        lines.append(
            f"reservation.create at 50% of saturation ({half['saturation'] / 2:.0f} of {half['saturation']:.0f} ops/s, "
            f"open loop): p50 {half['result']['p50_ms']:.2f} ms, p99 {p99:.2f} ms "
            f"(target <= {HALF_LOAD_P99_TARGET_MS:g} ms): {met_or_not(p99 <= HALF_LOAD_P99_TARGET_MS)}"
        )
        if "pgbench" in half:  # no target: what the database alone does at that rate
            lines.append(
                f"pgbench reservation.create at the same rate (-R): p50 {half['pgbench']['p50_ms']:.2f} ms, "
                f"p99 {half['pgbench']['p99_ms']:.2f} ms"
            )
    scaling = reservations.get("find_scaling")
    if scaling:
        growth = scaling["growth_p50"]
        lines.append(
            f"slots.find 10k -> {scaling['big_slots']} slots: p50 x{growth:.2f} (target <= {FIND_GROWTH_TARGET}x): "
            f"{met_or_not(growth <= FIND_GROWTH_TARGET)}"
        )
    return lines


def tracing_target_lines(report: dict[str, Any]) -> list[str]:
    """The issue-19 figures of a tracing bench report, each with its target and whether it was met."""
    lines = []
    for r in report.get("results", []):
        head = f"{r['pattern']:<20} c={r['concurrency']:<3}"
        lines.append(
            f"{head} tracing off {r['off_cpu_us']:.1f} / {r['off_again_cpu_us']:.1f} µs CPU per request "
            f"(the same code twice: {r['noise']:.1%} apart, the noise of this run)"
        )
        verdict = "met" if r["on_extra"] <= TRACING_CPU_TARGET else "NOT MET"
        lines.append(
            f"{head} tracing on  {r['on_cpu_us']:.1f} µs CPU per request, {r['on_extra']:+.1%} over off "
            f"(target <= +{TRACING_CPU_TARGET:.0%}): {verdict}"
        )
        sdk, spans = report.get("sdk"), r.get("spans_per_request")
        if sdk and spans:  # why the target can or cannot be met: what the SDK's spans cost by themselves
            # the export the "on" services run (booking_rpc.otlp's since it exists; the stock one before)
            export = sdk.get("own_http_export_us", sdk.get("http_export_us", sdk["encode_us"]))
            floor = spans * (sdk["span_us"] + export)
            off = (r["off_cpu_us"] + r["off_again_cpu_us"]) / 2
            lines.append(
                f"{head} of that, the SDK alone: {spans:.1f} spans per request x ({sdk['span_us']:.1f} µs to start "
                f"and end + {export:.1f} µs to export) = {floor:.1f} µs, {floor / off:+.1%} over off; the SDK's "
                f"span objects alone (no exporter can remove them): {spans * sdk['span_us']:.1f} µs, "
                f"{spans * sdk['span_us'] / off:+.1%}"
            )
        if "unsampled_cpu_us" in r:  # no target: the floor of our own code (and the SDK's sampling decision)
            recorded = r["on_cpu_us"] - r["unsampled_cpu_us"]
            lines.append(
                f"{head} tracing on, none sampled: {r['unsampled_cpu_us']:.1f} µs CPU per request, "
                f"{r['unsampled_extra']:+.1%} over off (booking_rpc's tracing code and the SDK's sampling decision); "
                f"recording and exporting the spans adds {recorded:.1f} µs in the service"
                + (f" ({recorded / spans:.1f} µs per span)" if spans else "")
            )
        if "sampled_cpu_us" in r:  # no target: what sampling buys
            lines.append(
                f"{head} tracing on, {r['sampled']:.0%} sampled: {r['sampled_cpu_us']:.1f} µs CPU per request, "
                f"{r['sampled_extra']:+.1%} over off (no target)"
            )
    off_path = report.get("off_path")
    if off_path:
        costs_nothing = (
            not off_path["tracing_enabled"] and not off_path["tracing_middleware"] and off_path["plain_connections"]
        )
        lines.append(
            "tracing off costs nothing: no tracing middleware "
            f"(the router's: {', '.join(off_path['middleware']) or 'none'}), "
            f"{'untraced (db.pool.ServiceConnection)' if off_path['plain_connections'] else 'TRACED'} connections: "
            f"{'met' if costs_nothing else 'NOT MET'}"
        )
    default = report.get("column_default")
    if default:
        lines.append(
            f"outbox insert, tracing off: {default['with_default_us']:.2f} µs per row with the trace_context "
            f"default, {default['without_default_us']:.2f} without ({default['non_null']} rows got a value)"
        )
    sdk = report.get("sdk")
    if sdk:
        export = f" ({sdk['http_export_us']:.1f} µs with the HTTP export)" if "http_export_us" in sdk else ""
        own = (
            f"; booking_rpc.otlp's (what otlp over http/protobuf uses): {sdk['own_encode_us']:.1f} µs to encode "
            f"({sdk['own_http_export_us']:.1f} µs with the HTTP export)"
            if "own_encode_us" in sdk
            else ""
        )
        lines.append(
            f"one SDK span: {sdk['span_us']:.1f} µs to start and end, {sdk['encode_us']:.1f} µs to encode for OTLP"
            f" by the stock exporter{export}{own} (the bench process, same machine)"
        )
    exported = report.get("exported")
    if exported:
        per_request = "; ".join(
            f"{name} {count:.1f} ({', '.join(exported.get('child_spans', {}).get(name, [])) or 'no child'})"
            for name, count in sorted(exported.get("spans_per_request", {}).items())
        )
        lines.append(
            f"OTLP sink received {exported['requests']} exports, {exported.get('spans', 0):,} spans, "
            f"{exported['bytes']:,} bytes" + (f"; spans per trace: {per_request}" if per_request else "")
        )
    return lines


def summary_table(results: dict[str, Any]) -> str:
    lines = [f"{'scenario':48} {'target':20} {'per s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
    for r in rows_from_results(results):
        lines.append(
            f"{r.scenario[:48]:48} {r.target[:20]:20} {r.throughput:>10,.0f} {r.p50_ms:>8.2f} "
            f"{r.p95_ms:>8.2f} {r.p99_ms:>8.2f}"
        )
    for key, where in RESERVATION_RUNS:
        measured = target_lines(results.get(key) or {})
        if measured:
            lines += ["", f"targets, {where}:", *measured]
    peer = results.get("peer") or {}
    if (peer.get("tcp") or {}).get("comparisons"):
        lines += ["", "booking-rpc beside the NestJS peer over TCP (same SQL, NestJS ClientProxy load; medians):"]
        lines += [f"- {line}" for line in peer_target_lines(peer["tcp"]["comparisons"], "TCP")]
    nats = results.get("nats") or {}
    if nats.get("results"):
        measured = nats_target_lines([Round(**r) for r in nats["results"]])
        lines += ["", "NATS (medians over the rounds):", *(f"- {line}" for line in measured)]
    peer_nats = (peer.get("nats") or {}).get("comparisons")
    if peer_nats:
        lines += ["", "slots.find over NATS beside the NestJS peer (ServerNats, same SQL; medians):"]
        lines += [f"- {line}" for line in peer_target_lines(peer_nats, "NATS")]
    jetstream = events_target_lines(results.get("events_jetstream") or {})
    jetstream += events_nest_lines(results.get("events_jetstream_nest") or {})
    if jetstream:
        lines += ["", "JetStream delivery:", *jetstream]
    tracing = tracing_target_lines(results.get("tracing") or {})
    if tracing:
        lines += ["", "tracing (service CPU per request, off vs on):", *tracing]
    deadline = deadline_target_lines(results.get("deadline") or {})
    if deadline:
        lines += ["", "request deadline (bench.deadline):", *deadline]
    flow_peer = (results.get("flow_peer") or {}).get("summary")
    if flow_peer:
        lines += ["", "hold -> confirm -> find, NestJS subscriber attached, beside the NestJS peer (bench.flow_peer; "]
        lines[-1] += "the peer's events are delivered by booking-rpc's relay):"
        lines += flow_peer_lines(flow_peer)
    flows = results.get("flows") or {}
    if "ratio" in flows:
        lines += ["", f"targets, hold+confirm at concurrency {flows['concurrency']} (bench.flows):"]
        lines += flows_target_lines(flows)
    return "\n".join(lines)


def deadline_target_lines(result: dict[str, Any]) -> list[str]:
    """bench.deadline's target: the deadline middleware's own CPU per request <= 5% of a slots.find's."""
    if not result:
        return []
    iso = result["isolated"]
    share = iso["share_of_slots_find"]
    return [
        f"  deadline middleware <= {DEADLINE_SHARE_TARGET:.0%} of slots.find's CPU per request: {iso['cost_us']} µs of "
        f"{result['summary']['booking.slots.find']['us_without']} µs, {share:.1%} "
        + ("met" if share <= DEADLINE_SHARE_TARGET else "not met"),
    ]


def flows_target_lines(flows: dict[str, Any]) -> list[str]:
    """bench.flows' two targets: with a subscriber >= 0.9x the throughput without; lag p99 <= 100 ms."""
    ratio, lag = flows["ratio"], flows["lag_p99_ms"]
    return [
        f"  subscriber attached >= 0.9x bookings/s: {ratio}x (rounds {flows['ratio_rounds']}) "
        + ("met" if ratio >= 0.9 else "not met"),
        f"  commit-to-subscriber p99 <= 100 ms: {lag} ms " + ("met" if lag <= 100 else "not met"),
    ]
