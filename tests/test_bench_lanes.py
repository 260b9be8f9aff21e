"""The benches' open-loop load (bench/lanes.paced_loop) against the real server: it offers the asked rate."""

from __future__ import annotations

import asyncio
import select
import socket
import time

import pytest

from bench.lanes import LostReply, closed_loop, open_lanes, paced_loop, poll_or_stall
from booking_rpc.server.server import Server
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame
from booking_rpc.wire.messages import response_reply


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


async def test_closed_loop_and_call_read_whole_replies_from_the_real_server(app_server: Server) -> None:
    lanes = await asyncio.to_thread(open_lanes, "127.0.0.1", app_server.port, 3)
    try:
        assert await asyncio.to_thread(lanes[0].call, "ping", {}) == b'{"response":"pong","isDisposed":true,"id":"1"}'
        latencies, errors, elapsed = await asyncio.to_thread(closed_loop, lanes, ping, 0.3)
    finally:
        for lane in lanes:
            lane.close()
    assert errors == 0
    assert len(latencies) >= 3 and all(ms > 0 for ms in latencies)
    assert elapsed >= 0.3
    assert all(not lane.buffer for lane in lanes)  # each reply cut off whole, nothing left over


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


async def test_a_call_whose_reply_never_completes_fails_within_its_stall_limit() -> None:
    """A peer that answers half a frame: Lane.call (the benches' setup calls) raises LostReply after its stall
    limit, saying how much it got, instead of blocking until pytest's timeout."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b'48#{"response":"pong"')  # the length promises more than ever comes
        await writer.drain()
        await reader.read(65536)  # held open: the reply is late, not ended
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (lane,) = await asyncio.to_thread(open_lanes, "127.0.0.1", port, 1)
    try:
        started = time.perf_counter()
        with pytest.raises(LostReply, match=r"no whole reply to 'ping' in 0\.3 s"):
            # bounded here too: without its own limit the call would block this thread for good
            await asyncio.wait_for(asyncio.to_thread(lane.call, "ping", {}, 0.3), 5.0)
        assert time.perf_counter() - started < 2.0
    finally:
        lane.sock.shutdown(socket.SHUT_RDWR)  # ends a recv still blocked in the worker thread
        lane.close()
        server.close()
        await server.wait_closed()


async def test_a_request_due_while_the_loop_runs_late_leaves_on_an_idle_lane_at_once() -> None:
    """Sending that runs past the next due time must not turn the wait before that request into "until a
    reply comes": the loop used to pass epoll no timeout then, so a due request waited for some busy lane's
    reply (with every lane idle: for the whole stall limit, 30 s, as the shared-cores bench's half-load run
    showed with 30 s latencies). Here each request takes 50 ms to build against a 10 ms schedule and the peer
    answers after 0.5 s: the second request must leave on the second lane at once, not after the first reply."""
    delay = 0.5
    answered: list[float] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = JsonFrameDecoder()
        loop = asyncio.get_running_loop()

        def answer(request_id: object) -> None:
            answered.append(loop.time())
            writer.write(encode_frame(response_reply(request_id, "pong")))

        while chunk := await reader.read(65536):
            for message in decoder.feed(chunk):
                loop.call_later(delay, answer, message["id"])
        writer.close()

    def slow_to_build() -> tuple[str, object]:
        time.sleep(0.05)
        return "ping", {}

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lanes = await asyncio.to_thread(open_lanes, "127.0.0.1", port, 2)
    try:
        latencies, errors, elapsed = await asyncio.to_thread(paced_loop, lanes, slow_to_build, 100.0, 0.02)
    finally:
        for lane in lanes:
            lane.close()
        server.close()
        await server.wait_closed()
    assert errors == 0
    assert len(latencies) == 2
    # both went out within ~0.1 s of their due times, so both replies came ~0.5 s after: one request's wait
    # behind the other's reply would have made the second ~1 s
    assert answered[1] - answered[0] < delay / 2
    assert max(latencies) < delay * 1000 + 250
    assert elapsed < 2 * delay


def test_waiting_for_a_reply_with_none_outstanding_is_refused_at_once() -> None:
    """Such a wait could only end by the stall limit: the loop's bookkeeping is wrong, and says so."""
    poller = select.epoll()
    try:
        started = time.perf_counter()
        with pytest.raises(RuntimeError, match="no request outstanding"):
            poll_or_stall(poller, -1.0, 0, 30.0)
        assert time.perf_counter() - started < 1.0
    finally:
        poller.close()
