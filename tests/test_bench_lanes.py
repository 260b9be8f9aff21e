"""The benches' open-loop load (bench/lanes.paced_loop) against the real server: it offers the asked rate."""

from __future__ import annotations

import asyncio

from bench.lanes import open_lanes, paced_loop
from booking_rpc.server.server import Server


def ping() -> tuple[str, object]:
    return "ping", {}


async def test_paced_loop_offers_its_rate_on_schedule(app_server: Server) -> None:
    lanes = await asyncio.to_thread(open_lanes, "127.0.0.1", app_server.port, 4)
    try:
        latencies, errors, elapsed = await asyncio.to_thread(paced_loop, lanes, ping, 200.0, 0.5)
    finally:
        for lane in lanes:
            lane.close()
    assert errors == 0
    assert len(latencies) == 100  # every scheduled request answered, none more
    assert 0.49 <= elapsed < 2.0  # the schedule spans the half second; it does not send faster than asked
    assert all(ms > 0 for ms in latencies)
