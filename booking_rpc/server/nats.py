"""NestJS `Transport.NATS`, as `ServerNats` (12.x) does it: the router's patterns served over a NATS server.

One queue subscription per registered route, on the route string as subject (what `ClientNats` publishes
to: `normalizePattern(pattern)`), in one queue group, so each request is handled by one replica. The route
comes from the subscription, never from the body (NestJS looks the handler up by channel too). A body
`{pattern, data, id}` is a request answered on the message's reply subject with the TCP transport's reply
frames, without headers; a body without `id` is an event; a body with neither `pattern` nor `data` is
the data of an event on that subject (NestJS's "external" packet). Handlers get the message headers only
through the router's `Call`.

Limits as over TCP: a payload above `max_payload` or one that is not JSON gets a structured error (NestJS
would log and leave the caller waiting); beyond `max_in_flight` requests at once in this process a request
is refused with `OVERLOADED` at once and an event waits for a slot in its route's backlog (at most
`SUB_PENDING_MSGS`, beyond which it is dropped and counted, as nats-py drops for a slow consumer), so
nothing queues without bound. NATS being down never stops the process: the connection is made in the
background and kept (reconnects forever), the state is in `stats` for /readyz and /metrics. Credentials the
server refuses do stop it (`check_credentials`): that never heals by waiting.

The per-message path is the TCP transport's (server/protocol.py): messages come from nats-py's parser
straight to `_receive` (server/nats_client.py, no queue and no Task per message), an eager route (echo,
ping) runs there without a Task, and the replies of one read (or, from Tasks, of one loop iteration) leave
as one batch, so one socket write carries many.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.subscription import Subscription
from nats.errors import AuthorizationError

from booking_rpc.errors import INTERNAL_ERROR, OVERLOADED_ERROR, RpcError
from booking_rpc.router import NO_RESPONSE, Call, Route, Router, RouteStats
from booking_rpc.server.dispatch import start_call
from booking_rpc.server.nats_client import DirectClient, pub_command
from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.json_codec import encode_json, parse_json
from booking_rpc.wire.messages import (
    Request,
    classify,
    disposed_reply,
    error_reply,
    response_reply,
    stream_item_reply,
)

log = structlog.get_logger(__name__)

TRANSPORT = "nats"
RECONNECT_WAIT = 1.0  # seconds between reconnect attempts to the same server
SUB_PENDING_MSGS = 65_536  # events waiting for a slot, per route, before they are dropped (slow consumer)
STREAM_HIGH_WATER = 4 * 1024 * 1024  # bytes a stream sends before it waits for the server to confirm them


def shown_url(url: str) -> str:
    """`url` without the secret it may carry: nats://svc:pw@host logs as nats://svc:***@host, a token as ***."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    login, host = rest.rsplit("@", 1)
    user = login.split(":", 1)[0] + ":" if ":" in login else ""
    return f"{scheme}{sep}{user}***@{host}"


class NatsRefused(Exception):
    """The NATS server refused our credentials (or an account forbids what we need): fix the settings."""


@dataclass(slots=True)
class NatsStats:
    """Plain counters (read at scrape time) and the connection state."""

    state: str = "connecting"  # connecting | connected | reconnecting | closed
    connects: int = 0
    disconnects: int = 0
    requests_total: int = 0
    events_total: int = 0
    events_failed: int = 0
    events_dropped: int = 0
    in_flight: int = 0
    overloaded: int = 0
    too_large: int = 0
    invalid_json: int = 0
    reply_errors: int = 0
    writes: int = 0  # batches of replies handed to the socket (replies per write: how well they share one)
    last_error: str = ""


@dataclass(eq=False)
class NatsTransport:
    router: Router
    ctx: Any
    servers: list[str] = field(kw_only=True)
    queue: str = field(default="booking-rpc", kw_only=True)
    max_payload: int = field(default=8 * 1024 * 1024, kw_only=True)
    max_in_flight: int = field(default=1024, kw_only=True)
    name: str = field(default="booking-rpc", kw_only=True)
    # nats-py's connect() arguments user/password or token; else what the URLs carry (nats://user:pass@host)
    credentials: dict[str, str] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        self.stats = NatsStats()
        self.nc = DirectClient()
        self.nc.after_read = self._flush  # the replies a read's requests produced at once: one write
        self.subscriptions: list[Subscription] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self._connector: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._refused: str = ""
        self._first_outcome = asyncio.Event()  # connected, or the first attempt failed
        # events waiting for an in-flight slot, oldest first
        self._backlog: deque[tuple[Route, RouteStats, Any, Call | None]] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- connection

    async def start(self) -> None:
        """Begin connecting in the background: the caller (and TCP) never waits for NATS."""
        self._loop = asyncio.get_running_loop()
        self._connector = self._loop.create_task(self._connect(), name="nats-transport-connect")

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until every route is subscribed (tests, and callers that want to know)."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

    async def check_credentials(self, timeout: float = 5.0) -> None:
        """Wait for the first connection attempt's outcome (at most `timeout`): raise NatsRefused when the
        server refused our credentials; a server down or slow is no error (we keep connecting)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._first_outcome.wait()
        if self._refused:
            raise NatsRefused(self._refused)

    async def _connect(self) -> None:
        try:
            await self.nc.connect(
                servers=self.servers,
                name=self.name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # never give up: TCP keeps serving meanwhile
                reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]  # seconds, float accepted
                connect_timeout=2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                **self.credentials,  # type: ignore[arg-type]
            )
            self.stats.state = "connected"
            self.stats.connects += 1
            self._first_outcome.set()
            # headers are parsed only for middleware (tracing, auth): without any, nobody reads them
            self.nc.wants_headers = bool(self.router.middleware)
            for route in self.router.routes.values():
                sub = await self.nc.subscribe(route.route, queue=self.queue)
                self.nc.deliver_to(sub, self._receiver(route))
                self.subscriptions.append(sub)
            await self.nc.flush_all()  # the server has the subscriptions
            self._subscribed.set()
            shown = [shown_url(url) for url in self.servers]
            log.info("serving over NATS", servers=shown, queue=self.queue, subjects=len(self.subscriptions))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._first_outcome.set()
            log.error("NATS transport could not start", error=self.stats.last_error)

    async def _on_error(self, exc: Exception) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if not self.stats.connects and (
            isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()
        ):  # nats-py says so with a plain Error while connecting
            if not self._refused:
                log.info("NATS refused the credentials", servers=[shown_url(url) for url in self.servers])
            self._refused = "the NATS server refused the credentials (authorization violation)"
            self._first_outcome.set()
            return  # check_credentials raises it (serve stops): no warning per retry meanwhile
        if self._refused and not self.stats.connects:
            return  # the server drops a refused login's connection: that reset says nothing new
        if not isinstance(exc, ConnectionResetError):  # a reset may come before the refusal that explains it
            self._first_outcome.set()
        log.warning("NATS connection error", error=self.stats.last_error)

    async def _on_disconnected(self) -> None:
        if self.shutting_down:
            return
        if self.stats.state == "connected":
            self.stats.disconnects += 1
            log.warning("NATS disconnected, reconnecting")
        if self.stats.state != "closed":
            self.stats.state = "reconnecting" if self.stats.connects else "connecting"

    async def _on_reconnected(self) -> None:
        self.stats.state = "connected"
        self.stats.connects += 1
        log.info("NATS reconnected")

    async def _on_closed(self) -> None:
        self.stats.state = "closed"

    # --- messages

    def _receiver(self, route: Route) -> Any:
        stats = route.stats_for(TRANSPORT)

        def receive(reply: bytes, data: bytes, headers: dict[str, str] | None) -> None:
            self._receive(route, stats, reply, data, headers)

        return receive

    def _receive(
        self, route: Route, route_stats: RouteStats, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> None:
        """One message, from nats-py's read loop: it must not block (handlers run in Tasks, or eagerly)."""
        if len(data) > self.max_payload:
            self.stats.too_large += 1
            err = RpcError("PAYLOAD_TOO_LARGE", f"The message is larger than {self.max_payload} bytes")
            self._send(reply, error_reply(None, err.to_wire()))
            return
        try:
            body = parse_json(data)
        except FrameError as exc:
            self.stats.invalid_json += 1
            # NestJS logs and never answers; the caller learns why instead (its id is unknown: null, which a
            # ClientNats accepts as its reply).
            self._send(reply, error_reply(None, RpcError("BAD_REQUEST", exc.message).to_wire()))
            return
        incoming = classify(body)
        call = Call(TRANSPORT, headers, reply.decode()) if self.router.middleware else None
        if isinstance(incoming, Request):
            self.stats.requests_total += 1
            if not route.eager and self.stats.in_flight >= self.max_in_flight:
                self.stats.overloaded += 1
                self._send(reply, error_reply(incoming.id, OVERLOADED_ERROR.to_wire()))
                return
            self._start(self._answer(route, route_stats, incoming.data, incoming.id, reply, call), route.eager)
        else:
            self.stats.events_total += 1
            if self._backlog or self.stats.in_flight >= self.max_in_flight:
                if len(self._backlog) >= SUB_PENDING_MSGS:
                    self.stats.events_dropped += 1
                    log.warning("NATS event dropped: too many waiting for a slot", route=route.route)
                    return
                self._backlog.append((route, route_stats, incoming.data, call))
                return
            self._start(self._consume(route, route_stats, incoming.data, call), route.eager)

    def _start(self, coro: Coroutine[Any, Any, None], eager: bool) -> None:
        assert self._loop is not None
        task = start_call(self._loop, coro, eager)
        if task is None:
            return
        self.tasks.add(task)
        self.stats.in_flight += 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.stats.in_flight -= 1
        self._start_waiting()

    def _start_waiting(self) -> None:
        backlog = self._backlog
        while backlog and self.stats.in_flight < self.max_in_flight:
            route, route_stats, data, call = backlog.popleft()
            self._start(self._consume(route, route_stats, data, call), route.eager)

    async def _answer(
        self, route: Route, route_stats: RouteStats, data: Any, request_id: Any, reply: bytes, call: Call | None
    ) -> None:
        try:
            result = await route.invoke(data, self.ctx, call, route_stats)
            if result is NO_RESPONSE:
                self._send(reply, disposed_reply(request_id))
            elif route.streaming:
                await self._stream(result, request_id, reply)
            else:
                self._send(reply, response_reply(request_id, result))
        except RpcError as err:
            self._send(reply, error_reply(request_id, err.to_wire()))
        except asyncio.CancelledError:
            raise
        except Exception:  # the router maps handler errors; this is a bug in the transport itself
            log.exception("unexpected error answering a NATS request", route=route.route)
            self._send(reply, error_reply(request_id, INTERNAL_ERROR.to_wire()))

    async def _stream(self, items: AsyncIterator[Any], request_id: Any, reply: bytes) -> None:
        """Each item as NestJS's send() frames a synchronously completing Observable: the last item carries
        `isDisposed` (NestJS buffers a tick's values and marks the last); an empty stream is `{isDisposed}`."""
        held: list[Any] = []
        unconfirmed = 0
        async for item in items:
            if held:
                unconfirmed += self._send(reply, stream_item_reply(request_id, held.pop()))
                if unconfirmed > STREAM_HIGH_WATER:
                    # streams produce without bound: let the server confirm (PING/PONG) what it has so far
                    self._flush()
                    await self.nc.flush()
                    unconfirmed = 0
            held.append(item)
        self._send(reply, response_reply(request_id, held[0]) if held else disposed_reply(request_id))

    async def _consume(self, route: Route, route_stats: RouteStats, data: Any, call: Call | None) -> None:
        try:
            await route.consume(data, self.ctx, call, route_stats)
        except RpcError as err:
            self.stats.events_failed += 1
            log.warning("event handler failed", route=route.route, code=err.code, error=err.message)

    # --- output

    def _send(self, subject: bytes, reply: dict[str, Any]) -> int:
        """Queue one reply frame (no reply subject: NestJS answers nothing, neither do we); the frames of
        one loop iteration leave together (_flush), as the TCP transport's replies do. Returns its size."""
        if not subject:
            return 0
        try:
            body = encode_json(reply)
        except (TypeError, ValueError) as exc:
            self.stats.reply_errors += 1
            log.error("reply could not be serialised", error=str(exc))
            body = encode_json(error_reply(reply.get("id"), INTERNAL_ERROR.to_wire()))
        if len(body) > self.nc.max_payload:
            # the NATS server would refuse it and the caller wait out its timeout: answer with an error
            self.stats.reply_errors += 1
            log.warning("NATS reply too large for the server's max_payload", size=len(body))
            err = RpcError(
                "PAYLOAD_TOO_LARGE",
                f"The reply is larger than the NATS server's max_payload ({self.nc.max_payload} bytes)",
                {"size": len(body)},
            )
            body = encode_json(error_reply(reply.get("id"), err.to_wire()))
        self._outgoing.append(pub_command(subject, body))
        if not self._flush_scheduled and not self.nc.reading:  # while reading: after_read flushes
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        return len(body)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing:
            return
        commands, self._outgoing = self._outgoing, []
        self.stats.writes += 1
        if not self.nc.send(commands, len(commands)):  # closed, or reconnecting with the buffer full
            self.stats.reply_errors += len(commands)
            log.warning("NATS replies not sent: not connected", count=len(commands))

    # --- shutdown

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop taking messages (drain the subscriptions), finish in-flight up to `deadline`, flush, close. With
        NATS gone (reconnecting) there is nothing to drain or flush, and the close is bounded and raises nothing."""
        self.shutting_down = True
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        if self.nc.is_connected:
            for sub in self.subscriptions:
                with contextlib.suppress(Exception):
                    await sub.drain()  # type: ignore[no-untyped-call]
        while (self.tasks or self._backlog) and loop.time() < end:
            if not self.tasks:  # eager events that waited in the backlog: start them (they finish at once)
                self._start_waiting()
                continue
            await asyncio.wait(set(self.tasks), timeout=max(0.0, end - loop.time()))
        leftover = list(self.tasks)
        if leftover:
            log.warning("cancelling NATS requests still running at the shutdown deadline", count=len(leftover))
            self._backlog.clear()
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        self._flush()
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        await self.nc.close()  # bounded and raising nothing, reconnecting or not (DirectClient.close)
        self.stats.state = "closed"
