"""A lean closed-loop load generator: the pgbench of the wire.

Each lane is one TCP connection with one request in flight. A lane writes a ready NestJS frame and waits
for the reply frame, which it splits off by its length prefix and classifies by its first key
(`{"response":` or `{"err":`, our replies' key order) without parsing the JSON, the way pgbench does
not materialise rows. The lanes share one thread and one epoll set over non-blocking sockets, with no
event loop, futures or tasks in between: pgbench's shape (one thread, a poll over its connections), so
the load generator's own CPU per request stays near pgbench's and the cores go to the service and
PostgreSQL.

Replies must be ASCII (the benches' are: uuids, dates, numbers, status words): then the prefix's UTF-16
units are bytes. A lane refuses anything else rather than guess.
"""

from __future__ import annotations

import collections
import itertools
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from booking_rpc.wire.json_codec import encode_frame
from booking_rpc.wire.messages import request_message

OK_PREFIX = b'{"response":'
RECV_SIZE = 1 << 18
# No reply on any busy lane for this long: the service's own deadline (10 s by default) would have answered
# a stuck request by now, so a reply was lost; the run fails saying so instead of waiting for ever.
STALL_SECONDS = 30.0

Request = Callable[[], tuple[str, Any]]


class ReplyError(Exception):
    """The service answered with an error (or something a lane cannot read)."""


class LostReply(Exception):
    """Busy lanes got no reply within STALL_SECONDS."""


def poll_or_stall(poller: select.epoll, timeout: float, busy: int, stall: float) -> list[tuple[int, int]]:
    """epoll's ready lanes, waiting at most `timeout` s (< 0: until one is ready, at most `stall` s);
    LostReply when a wait with replies outstanding ends with none. A wait until a reply with none
    outstanding could only end by the stall limit: that is the loop's own bookkeeping gone wrong, said at once."""
    if timeout < 0 and not busy:
        raise RuntimeError("waiting for a reply with no request outstanding")
    wait = stall if timeout < 0 else min(timeout, stall)
    events = poller.poll(wait)
    if not events and busy and (timeout < 0 or timeout >= stall):
        raise LostReply(f"no reply on {busy} busy lane(s) for {stall:.0f} s")
    return events


class Lane:
    """One connection: sends a frame, collects bytes until the reply frame is whole."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.ids = itertools.count(1)
        self.sent_at = 0.0

    def send(self, pattern: str, data: Any) -> None:
        self.sent_at = time.perf_counter()
        self.sock.sendall(encode_frame(request_message(pattern, data, str(next(self.ids)))))

    def reply(self) -> bytes | None:
        """The reply's JSON text once its frame is whole, else None (read more)."""
        buffer = self.buffer
        hash_at = buffer.find(b"#")
        if hash_at < 0:
            return None
        end = hash_at + 1 + int(buffer[:hash_at])
        if len(buffer) < end:
            return None
        body = bytes(buffer[hash_at + 1 : end])
        del buffer[:end]
        if not body.isascii():
            raise ReplyError("non-ASCII reply: the lane cannot count its length")
        return body

    def receive(self) -> bytes | None:
        """Read what the socket has (one recv) and return the reply if that made it whole, else None."""
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError("connection lost")
        self.buffer += chunk
        return self.reply()

    def call(self, pattern: str, data: Any, stall: float = STALL_SECONDS) -> bytes:
        """One request, blocking until its reply: the reply's JSON text; ReplyError when it is an error, and
        LostReply when no whole reply came within `stall` seconds (the loops' limit: a lost or broken reply
        fails the run saying so, instead of blocking it)."""
        self.send(pattern, data)
        deadline = time.perf_counter() + stall
        body = self.reply()
        try:
            while body is None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                body = self.receive()
        except TimeoutError:
            raise LostReply(f"no whole reply to {pattern!r} in {stall:g} s ({len(self.buffer)} bytes of it)") from None
        finally:
            self.sock.settimeout(None)
        if not body.startswith(OK_PREFIX):
            raise ReplyError(body[:300].decode())
        return body

    def close(self) -> None:
        self.sock.close()


def open_lanes(host: str, port: int, n: int) -> list[Lane]:
    return [Lane(host, port) for _ in range(n)]


def closed_loop(
    lanes: list[Lane], request: Request, seconds: float, stall: float = STALL_SECONDS
) -> tuple[list[float], int, float]:
    """Every lane sends `request()` back to back for `seconds`: (latencies in ms, errors, elapsed s)."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    by_fd = {lane.sock.fileno(): lane for lane in lanes}
    poller = select.epoll()
    for fd, lane in by_fd.items():
        lane.sock.setblocking(False)
        poller.register(fd, select.EPOLLIN)
    started = clock()
    deadline = started + seconds
    try:
        for lane in lanes:
            lane.send(*request())
        busy = len(lanes)
        while busy:
            for fd, _ in poll_or_stall(poller, -1.0, busy, stall):
                lane = by_fd[fd]
                body = lane.receive()
                if body is None:
                    continue
                now = clock()
                if body.startswith(OK_PREFIX):
                    latencies.append((now - lane.sent_at) * 1000)
                else:
                    errors += 1
                if now < deadline:
                    lane.send(*request())
                else:
                    busy -= 1
    finally:
        poller.close()
        for lane in lanes:
            lane.sock.setblocking(True)
    return latencies, errors, clock() - started


def paced_loop(
    lanes: list[Lane], request: Request, rate: float, seconds: float, stall: float = STALL_SECONDS
) -> tuple[list[float], int, float]:
    """Open loop: `rate` requests per second on a fixed schedule for `seconds`, each sent on an idle lane
    (one waits for a lane when all are busy): (latencies in ms, errors, elapsed s).

    A latency counts from when its request was due, not from when it left, so a stall that delays sending
    counts too (no coordinated omission, as wrk2 measures). The wait between sends is epoll's, in whole
    milliseconds rounded up, so a request leaves at most 1 ms late: counted in its latency, never hidden.
    """
    clock = time.perf_counter
    interval = 1.0 / rate
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    errors = 0
    by_fd = {lane.sock.fileno(): lane for lane in lanes}
    due_of: dict[int, float] = {}
    idle = list(lanes)
    waiting: collections.deque[float] = collections.deque()  # due times of requests without an idle lane yet
    poller = select.epoll()
    for fd in by_fd:
        by_fd[fd].sock.setblocking(False)
        poller.register(fd, select.EPOLLIN)
    started = clock()
    scheduled = 0
    try:
        while scheduled < total or waiting or len(idle) < len(lanes):
            now = clock()
            while scheduled < total and started + scheduled * interval <= now:
                waiting.append(started + scheduled * interval)
                scheduled += 1
            while waiting and idle:
                lane = idle.pop()
                due_of[lane.sock.fileno()] = waiting.popleft()
                lane.send(*request())
            # until the next request is due (0 when it is due already: sending ran past it), or, once all
            # are scheduled, until a reply comes; a late due time is not "no time limit"
            timeout = max(0.0, started + scheduled * interval - clock()) if scheduled < total else -1.0
            for fd, _ in poll_or_stall(poller, timeout, len(lanes) - len(idle), stall):
                lane = by_fd[fd]
                body = lane.receive()
                if body is None:
                    continue
                if body.startswith(OK_PREFIX):
                    latencies.append((clock() - due_of[fd]) * 1000)
                else:
                    errors += 1
                idle.append(lane)
    finally:
        poller.close()
        for lane in lanes:
            lane.sock.setblocking(True)
    return latencies, errors, clock() - started
