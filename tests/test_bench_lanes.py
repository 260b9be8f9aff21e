"""The benches' open-loop load (bench/lanes.paced_loop) against the real server: it offers the asked rate."""

from __future__ import annotations

import asyncio

import pytest

from bench.lanes import LostReply, closed_loop, open_lanes, paced_loop
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


async def test_a_lost_reply_fails_the_run_instead_of_hanging_it() -> None:
    """A peer that reads a request and never answers: both loops end with LostReply after their stall limit."""
    swallowed: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            swallowed.append(chunk)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for run in (
            lambda lanes: closed_loop(lanes, ping, 0.2, stall=0.3),
            lambda lanes: paced_loop(lanes, ping, 50.0, 0.2, stall=0.3),
        ):
            lanes = await asyncio.to_thread(open_lanes, "127.0.0.1", port, 2)
            try:
                with pytest.raises(LostReply, match="busy lane"):
                    await asyncio.to_thread(run, lanes)
            finally:
                for lane in lanes:
                    lane.close()
    finally:
        server.close()
        await server.wait_closed()
    assert swallowed  # the requests did leave: it is the replies that never came
