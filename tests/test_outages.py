"""The whole service against a database that stops, then freezes, while requests flow.

A PostgreSQL the test owns (embedded, started here) is stopped for 10 s (sessions end, as in a restart or
failover), started, then frozen with SIGSTOP for 10 s (a frozen VM, a partition, a stuck volume: nothing
answers, nothing closes) and thawed. Meanwhile hold+confirm flows run over real sockets against a
`booking-rpc serve` subprocess, and its relay delivers booking.confirmed to a subscriber. Each request is
answered (ok or a structured 503/504) within its deadline, the process stays up, /readyz follows the
database, requests succeed again within 2 s of the database answering, and the relay LISTENs again with
commit-to-subscriber back under 50 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from booking_rpc.router import Router
from tests.fixtures.server import MakeServer
from tests.fixtures.service import OwnedPostgres, ServiceProcess, Traffic, http_get, seed_slots, start_service

DEADLINE = 2.0
SLACK = 0.5  # a loaded, shared machine: scheduling, the reply's way back
pytestmark = pytest.mark.timeout(300)


def readiness(service: ServiceProcess) -> int:
    try:
        return http_get(service.metrics_port, "/readyz", timeout=DEADLINE + 1)[0]
    except OSError:
        return 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def lag_median(traffic: Traffic, received: dict[str, float], since: float, count: int = 20) -> float:
    """Median commit-to-subscriber lag of the next `count` bookings confirmed after `since`."""
    async with asyncio.timeout(30):
        while True:
            mine = [b for b, t in traffic.confirmed.items() if t >= since]
            if len(mine) >= count and all(b in received for b in mine[:count]):
                return statistics.median(received[b] - traffic.confirmed[b] for b in mine[:count])
            await asyncio.sleep(0.05)


async def wait_until(predicate: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.1)


async def recovered(
    service: ServiceProcess, traffic: Traffic, received: dict[str, float], back: float
) -> tuple[float, float]:
    """After the database answers again at `back`: the first success within 2 s, ready again, LISTENing
    again, and commit-to-subscriber back under 50 ms. Returns (seconds to first success, lag median)."""
    await wait_until(lambda: any(o.code == "ok" and o.sent >= back for o in traffic.outcomes), 5)
    recovery = traffic.first_ok_after(back) - back
    assert recovery < 2.0
    await wait_until(lambda: readiness(service) == 200, 5)
    await wait_until(lambda: service.metric("booking_rpc_outbox_relay_listening") == 1.0, 15)
    lag = await lag_median(traffic, received, time.perf_counter())
    assert lag < 0.05
    return recovery, lag


async def test_a_stopped_then_frozen_database(tmp_path: Path, make_server: MakeServer) -> None:
    received: dict[str, float] = {}
    subscriber = Router()

    @subscriber.event("booking.confirmed")
    async def on_confirmed(payload: dict[str, Any], ctx: Any) -> None:
        received.setdefault(payload["booking_id"], time.perf_counter())

    sub_server = await make_server(subscriber)
    pg = await asyncio.to_thread(OwnedPostgres.start, tmp_path / "pg")
    service = await asyncio.to_thread(
        start_service,
        {
            "DATABASE_URL": pg.dsn,
            "BOOKING_RPC_REQUEST_TIMEOUT": str(DEADLINE),
            "BOOKING_RPC_DB_CONNECT_TIMEOUT": "1",
            "BOOKING_RPC_SUBSCRIBERS": f"rec=127.0.0.1:{sub_server.port}:booking.confirmed",
            "BOOKING_RPC_OUTBOX_POLL_INTERVAL": "30",  # a delivery in time is a wake-up, not the poll
        },
    )
    try:
        service_id, slots = await seed_slots(service, pg.dsn, count=40, capacity=100_000)
        traffic = Traffic(service.port, service_id, slots, timeout=DEADLINE + 10)
        flows = [asyncio.create_task(traffic.flow(i)) for i in range(4)]
        try:
            healthy = time.perf_counter()
            lag_healthy = await lag_median(traffic, received, healthy)
            assert lag_healthy < 0.05
            assert service.metric("booking_rpc_outbox_relay_listening") == 1.0
            rss_before = rss_kb(service.process.pid)

            # --- stopped: sessions end, connects are refused
            await asyncio.to_thread(pg.stop)
            await wait_until(lambda: readiness(service) == 503, 5)
            await asyncio.sleep(10)
            stopped_codes = {o.code for o in traffic.outcomes if o.sent > healthy + 1}
            await asyncio.to_thread(pg.start_again)
            back = time.perf_counter()
            recovery_stop, lag_after_stop = await recovered(service, traffic, received, back)

            # --- frozen: nothing answers, nothing closes
            frozen = await asyncio.to_thread(pg.freeze)
            freeze_at = time.perf_counter()
            try:
                await wait_until(lambda: readiness(service) == 503, 5)
                await asyncio.sleep(8)
                assert service.process.poll() is None
                rss_frozen = rss_kb(service.process.pid)
            finally:
                await asyncio.to_thread(pg.thaw, frozen)
            thawed = time.perf_counter()
            recovery_freeze, lag_after_freeze = await recovered(service, traffic, received, thawed)
        finally:
            traffic.stop = True
            await asyncio.gather(*flows, return_exceptions=True)
        for task in flows:
            assert task.exception() is None  # no client-side timeout

        def slowest(start: float, end: float) -> str:
            phase = [o for o in traffic.outcomes if start <= o.sent < end and o.code != "ok"]
            return f"{len(phase)} errors, slowest {max((o.answered - o.sent for o in phase), default=0):.3f} s"

        print(
            f"\nstopped 10 s: {slowest(healthy, back)}; first success {recovery_stop:.3f} s after restart\n"
            f"frozen 10 s: {slowest(freeze_at, thawed)}; first success {recovery_freeze:.3f} s after thaw; "
            f"RSS {rss_before / 1024:.1f} -> {rss_frozen / 1024:.1f} MB\n"
            f"commit-to-subscriber median: {lag_healthy * 1000:.1f} ms before, {lag_after_stop * 1000:.1f} ms after "
            f"the stop, {lag_after_freeze * 1000:.1f} ms after the freeze; "
            f"LISTEN losses {service.metric('booking_rpc_outbox_relay_listen_losses_total')}"
        )
        # every request was answered within its deadline, ok or with a structured 503/504
        late = [o for o in traffic.outcomes if o.answered - o.sent > DEADLINE + SLACK]
        assert not late, f"{len(late)} answers came late, slowest {max(o.answered - o.sent for o in late):.2f} s"
        codes = {o.code for o in traffic.outcomes}
        assert codes <= {"ok", "SERVICE_UNAVAILABLE", "TIMEOUT"}, codes  # never "disconnected"
        assert "SERVICE_UNAVAILABLE" in stopped_codes
        during_freeze = {o.code for o in traffic.outcomes if freeze_at + 0.5 < o.sent < thawed - DEADLINE}
        assert during_freeze and during_freeze <= {"SERVICE_UNAVAILABLE", "TIMEOUT"}, during_freeze
        assert rss_frozen - rss_before < 50_000, "memory grew while the database was frozen"
        assert service.process.poll() is None
        # every booking confirmed was delivered (the relay caught up after each outage)
        await wait_until(lambda: all(b in received for b in traffic.confirmed), 30)
    finally:
        await asyncio.to_thread(service.stop)
        await asyncio.to_thread(pg.close)
