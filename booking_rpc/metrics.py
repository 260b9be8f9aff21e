"""Prometheus metrics, collected at scrape time from the plain counters each layer keeps.

Nothing on the request path calls prometheus_client: the router, transport, relay and jobs count in plain
Python, and this collector turns those counts into metric families when /metrics is scraped. Figures
that live in the database (the outbox backlog) are read just before, with a short timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from booking_rpc.router import LATENCY_BUCKETS, Router

PREFIX = "booking_rpc"


class ServiceCollector(Collector):
    """`consumed` counts consumed events by (event type, "applied" | "stale"); the composition root hands
    the handlers' counter in, so this module knows no handler."""

    def __init__(
        self,
        router: Router,
        server: Any = None,
        relay: Any = None,
        jobs: Any = None,
        pool: Any = None,
        nats: Any = None,
        *,
        consumed: Mapping[tuple[str, str], int] | None = None,
        replica: Any = None,
    ):
        self.router = router
        self.replica = replica
        self.nats = nats
        self.consumed: Mapping[tuple[str, str], int] = consumed if consumed is not None else {}
        self.server = server
        self.relay = relay
        self.jobs = jobs
        self.pool = pool
        self.outbox: dict[str, float] = {}

    async def refresh(self, ctx: Any) -> None:
        """Read the outbox figures from the database (kept from the last scrape if it is slow or down)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0), ctx.connection() as conn:
                row = await conn.fetchrow(ctx.sql["outbox.stats"])
            if row is not None:
                self.outbox = {k: float(row[k]) for k in ("pending", "oldest_age_seconds", "dead")}

    def collect(self) -> Iterator[Any]:
        yield from self._requests()
        yield from self._transport()
        yield from self._nats()
        yield from self._events()
        yield from self._jobs()
        yield from self._pool()

    def _requests(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            f"{PREFIX}_requests",
            "Requests and events handled, by pattern, transport and outcome (ok or error code)",
            labels=["pattern", "kind", "outcome", "transport"],
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_request_duration_seconds", "Handler latency by pattern", labels=["pattern", "transport"]
        )
        for route, entry in sorted(self.router.routes.items()):
            for transport, stats in [("tcp", entry.stats), *sorted(entry.transport_stats.items())]:
                for outcome, count in sorted(stats.outcomes.items()):
                    requests.add_metric([route, entry.kind, outcome, transport], count)
                total = sum(stats.buckets)
                if total:
                    cumulative, buckets = 0, []
                    for bound, count in zip(LATENCY_BUCKETS, stats.buckets, strict=False):
                        cumulative += count
                        buckets.append((repr(bound), cumulative))
                    buckets.append(("+Inf", total))
                    latency.add_metric([route, transport], buckets, stats.seconds_sum)
        yield requests
        yield latency

    def _transport(self) -> Iterator[Any]:
        s = getattr(self.server, "stats", None)
        if s is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}_connections_open", "Open client connections", value=s.connections_open)
        yield CounterMetricFamily(f"{PREFIX}_connections", "Connections accepted", value=s.connections_total)
        in_flight = GaugeMetricFamily(f"{PREFIX}_requests_in_flight", "Requests being handled", labels=["transport"])
        in_flight.add_metric(["tcp"], s.in_flight)
        if self.nats is not None:
            in_flight.add_metric(["nats"], self.nats.stats.in_flight)
        yield in_flight
        yield CounterMetricFamily(
            f"{PREFIX}_tcp_requests_overloaded",
            "TCP requests refused with OVERLOADED (max_requests_in_flight)",
            value=s.overloaded,
        )
        yield CounterMetricFamily(f"{PREFIX}_socket_writes", "Socket writes of replies", value=s.writes)
        frames = CounterMetricFamily(f"{PREFIX}_frame_errors", "Malformed frames (connection closed)", labels=["kind"])
        for kind, count in sorted(s.frame_errors.items()):
            frames.add_metric([kind], count)
        yield frames
        dropped = CounterMetricFamily(
            f"{PREFIX}_connections_dropped", "Connections dropped by a limit", labels=["reason"]
        )
        for reason, count in sorted(s.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        received = CounterMetricFamily(f"{PREFIX}_events_received", "Events received (emit)", labels=["transport"])
        failed = CounterMetricFamily(f"{PREFIX}_events_failed", "Events refused or failed", labels=["transport"])
        received.add_metric(["tcp"], s.events_total)
        failed.add_metric(["tcp"], s.events_failed)
        if self.nats is not None:
            received.add_metric(["nats"], self.nats.stats.events_total)
            failed.add_metric(["nats"], self.nats.stats.events_failed)
        yield received
        yield failed

    def _nats(self) -> Iterator[Any]:
        if self.nats is None:
            return
        s = self.nats.stats
        yield GaugeMetricFamily(
            f"{PREFIX}_nats_connected", "1 while the NATS pattern transport is connected", value=s.state == "connected"
        )
        yield CounterMetricFamily(f"{PREFIX}_nats_connects", "NATS (re)connections made", value=s.connects)
        yield CounterMetricFamily(f"{PREFIX}_nats_disconnects", "NATS connections lost", value=s.disconnects)
        yield CounterMetricFamily(
            f"{PREFIX}_nats_requests_received", "Requests received over NATS", value=s.requests_total
        )
        refused = CounterMetricFamily(
            f"{PREFIX}_nats_refused", "NATS messages refused with an error reply", labels=["reason"]
        )
        for reason, count in (
            ("overloaded", s.overloaded),
            ("too_large", s.too_large),
            ("invalid_json", s.invalid_json),
        ):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            f"{PREFIX}_nats_reply_errors", "NATS replies that could not be sent", value=s.reply_errors
        )

    def _events(self) -> Iterator[Any]:
        consumed = CounterMetricFamily(
            f"{PREFIX}_events_consumed",
            "Consumed events by type and result (applied or stale)",
            labels=["event", "result"],
        )
        for (event, result), count in sorted(self.consumed.items()):
            consumed.add_metric([event, result], count)
        yield consumed
        if self.outbox:
            yield GaugeMetricFamily(
                f"{PREFIX}_outbox_pending", "Undelivered outbox events", value=self.outbox["pending"]
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_outbox_oldest_age_seconds",
                "Age of the oldest undelivered event",
                value=self.outbox["oldest_age_seconds"],
            )
            yield GaugeMetricFamily(f"{PREFIX}_outbox_dead", "Deliveries parked as dead", value=self.outbox["dead"])
        sink = getattr(self.relay, "jetstream", None)
        if sink is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_jetstream_connected", "1 while the relay's JetStream sink can publish", value=sink.ready
            )
            yield CounterMetricFamily(
                f"{PREFIX}_jetstream_duplicates", "Publishes the stream acked as duplicates", value=sink.duplicates
            )
        stats = getattr(self.relay, "stats", None)
        if stats is not None:
            deliveries = CounterMetricFamily(
                f"{PREFIX}_outbox_deliveries",
                "Event deliveries by subscriber and outcome",
                labels=["subscriber", "outcome"],
            )
            for outcome, counter in (("delivered", stats.delivered), ("failed", stats.failed), ("dead", stats.dead)):
                for subscriber, count in sorted(counter.items()):
                    deliveries.add_metric([subscriber, outcome], count)
            yield deliveries
            yield GaugeMetricFamily(
                f"{PREFIX}_outbox_relay_listening",
                "1 while the relay LISTENs for new events, 0 while it only polls",
                value=int(stats.listening),
            )
            yield CounterMetricFamily(
                f"{PREFIX}_outbox_relay_listen_losses",
                "Times the relay lost its LISTEN connection",
                value=stats.listen_losses,
            )

    def _jobs(self) -> Iterator[Any]:
        stats = getattr(self.jobs, "stats", None)
        if stats is None:
            return
        runs = CounterMetricFamily(f"{PREFIX}_job_runs", "Background job runs", labels=["job", "result"])
        items = CounterMetricFamily(f"{PREFIX}_job_items", "Items processed by background jobs", labels=["job"])
        for job, count in sorted(stats.runs.items()):
            runs.add_metric([job, "ok"], count)
        for job, count in sorted(stats.errors.items()):
            runs.add_metric([job, "error"], count)
        for job, count in sorted(stats.items.items()):
            items.add_metric([job], count)
        yield runs
        yield items

    def _pool(self) -> Iterator[Any]:
        if self.pool is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}_db_pool_size", "Connections in the pool", value=self.pool.get_size())
        yield GaugeMetricFamily(
            f"{PREFIX}_db_pool_idle", "Idle connections in the pool", value=self.pool.get_idle_size()
        )
        yield CounterMetricFamily(
            f"{PREFIX}_db_pool_waits", "Acquires that found every connection busy", value=self.pool.waits
        )
        yield CounterMetricFamily(
            f"{PREFIX}_db_pool_wait_seconds", "Time spent waiting for a connection", value=self.pool.wait_seconds
        )
        if self.replica is not None:
            r = self.replica
            yield GaugeMetricFamily(
                f"{PREFIX}_read_replica_usable", "1 while reads go to the replica (up, within read_max_lag)", r.usable
            )
            if r.lag is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_read_replica_lag_seconds", "Replica lag at the last check (bound)", value=r.lag
                )
            reads = CounterMetricFamily(
                f"{PREFIX}_read_connections", "Read-only pattern connections by where they ran", labels=["on"]
            )
            reads.add_metric(["replica"], r.reads)
            reads.add_metric(["primary"], r.fallbacks)
            yield reads


def make_registry(collector: ServiceCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    data: bytes = generate_latest(registry)
    return data
