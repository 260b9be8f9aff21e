"""A lean closed-loop load generator: the pgbench of the wire.

Each lane is one TCP connection with one request in flight. A lane writes a ready NestJS frame and waits
for the reply frame, which it splits off by its length prefix and classifies by its first key
(`{"response":` or `{"err":`, our replies' key order) without parsing the JSON, the way pgbench does
not materialise rows. So the load generator's own CPU per request stays small beside the service's, and
on a 2-core machine the service and PostgreSQL get the cores, as they do under pgbench.

Replies must be ASCII (the benches' are: uuids, dates, numbers, status words): then the prefix's UTF-16
units are bytes. A lane refuses anything else rather than guess.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any, cast

from booking_rpc.wire.json_codec import encode_frame
from booking_rpc.wire.messages import request_message

OK_PREFIX = b'{"response":'


class ReplyError(Exception):
    """The service answered with an error (or something a lane cannot read)."""


class Lane(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.ids = itertools.count(1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        hash_at = self.buffer.find(b"#")
        if hash_at < 0:
            return
        length = int(self.buffer[:hash_at])
        end = hash_at + 1 + length
        if len(self.buffer) < end:
            return
        body = bytes(self.buffer[hash_at + 1 : end])
        del self.buffer[:end]
        if self.waiter is not None and not self.waiter.done():
            if body.isascii():
                self.waiter.set_result(body)
            else:
                self.waiter.set_exception(ReplyError("non-ASCII reply: the lane cannot count its length"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def call(self, pattern: str, data: Any) -> bytes:
        """Send one request, return the reply's JSON text; ReplyError when it is an error reply."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(encode_frame(request_message(pattern, data, str(next(self.ids)))))
        body = await self.waiter
        if not body.startswith(OK_PREFIX):
            raise ReplyError(body[:300].decode())
        return body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_lanes(host: str, port: int, n: int) -> list[Lane]:
    loop = asyncio.get_running_loop()
    lanes = []
    for _ in range(n):
        _, lane = await loop.create_connection(Lane, host, port)
        lanes.append(lane)
    return lanes


Request = Callable[[], tuple[str, Any]]


async def closed_loop(lanes: list[Lane], request: Request, seconds: float) -> tuple[list[float], int, float]:
    """Every lane sends `request()` back to back for `seconds`: (latencies in ms, errors, elapsed s)."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    deadline = clock() + seconds

    async def run(lane: Lane) -> None:
        nonlocal errors
        while (t0 := clock()) < deadline:
            pattern, data = request()
            try:
                await lane.call(pattern, data)
            except ReplyError:
                errors += 1
                continue
            latencies.append((clock() - t0) * 1000)

    started = clock()
    await asyncio.gather(*(run(lane) for lane in lanes))
    return latencies, errors, clock() - started
