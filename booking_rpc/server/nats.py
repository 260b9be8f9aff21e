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
is refused with `OVERLOADED` at once and an event waits for a slot (holding back its own subscription
only), so nothing queues without bound. NATS being down never stops the process: the connection is made
in the background and kept (reconnects forever), the state is in `stats` for /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from booking_rpc.errors import INTERNAL_ERROR, OVERLOADED_ERROR, RpcError
from booking_rpc.router import NO_RESPONSE, Call, Route, Router, RouteStats
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
SUB_PENDING_MSGS = 65_536  # per subscription, before nats-py drops as a slow consumer


@dataclass(slots=True)
class NatsStats:
    """Plain counters (read at scrape time) and the connection state."""

    state: str = "connecting"  # connecting | connected | reconnecting | closed
    connects: int = 0
    disconnects: int = 0
    requests_total: int = 0
    events_total: int = 0
    events_failed: int = 0
    in_flight: int = 0
    overloaded: int = 0
    too_large: int = 0
    invalid_json: int = 0
    reply_errors: int = 0
    last_error: str = ""


class NatsTransport:
    def __init__(
        self,
        router: Router,
        ctx: Any,
        *,
        servers: list[str],
        queue: str = "booking-rpc",
        max_payload: int = 8 * 1024 * 1024,
        max_in_flight: int = 1024,
        name: str = "booking-rpc",
    ) -> None:
        self.router = router
        self.ctx = ctx
        self.servers = servers
        self.queue = queue
        self.max_payload = max_payload
        self.max_in_flight = max_in_flight
        self.name = name
        self.stats = NatsStats()
        self.nc = NatsClient()
        self.subscriptions: list[Subscription] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self._slot_freed = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # --- connection

    async def start(self) -> None:
        """Begin connecting in the background: the caller (and TCP) never waits for NATS."""
        self._connector = asyncio.create_task(self._connect(), name="nats-transport-connect")

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until every route is subscribed (tests, and callers that want to know)."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

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
            )
            self.stats.state = "connected"
            self.stats.connects += 1
            for route in self.router.routes.values():
                self.subscriptions.append(
                    await self.nc.subscribe(
                        route.route, queue=self.queue, cb=self._callback(route), pending_msgs_limit=SUB_PENDING_MSGS
                    )
                )
            # nats-py writes flush()'s PING straight to the socket, ahead of the SUBs still in its pending
            # buffer: the first flush lets the flusher write them, the second PONG proves the server has them.
            await self.nc.flush()
            await self.nc.flush()
            self._subscribed.set()
            log.info("serving over NATS", servers=self.servers, queue=self.queue, subjects=len(self.subscriptions))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.error("NATS transport could not start", error=self.stats.last_error)

    async def _on_error(self, exc: Exception) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
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

    def _callback(self, route: Route) -> Callable[[Msg], Awaitable[None]]:
        stats = route.stats_for(TRANSPORT)

        async def on_message(msg: Msg) -> None:
            await self._receive(route, stats, msg)

        return on_message

    async def _receive(self, route: Route, route_stats: RouteStats, msg: Msg) -> None:
        reply = msg.reply
        if len(msg.data) > self.max_payload:
            self.stats.too_large += 1
            err = RpcError("PAYLOAD_TOO_LARGE", f"The message is larger than {self.max_payload} bytes")
            await self._publish(reply, error_reply(None, err.to_wire()))
            return
        try:
            body = parse_json(msg.data)
        except FrameError as exc:
            self.stats.invalid_json += 1
            # NestJS logs and never answers; the caller learns why instead (its id is unknown: null, which a
            # ClientNats accepts as its reply).
            await self._publish(reply, error_reply(None, RpcError("BAD_REQUEST", exc.message).to_wire()))
            return
        incoming = classify(body)
        call = Call(TRANSPORT, msg.headers, reply) if self.router.middleware else None
        if isinstance(incoming, Request):
            self.stats.requests_total += 1
            if self.stats.in_flight >= self.max_in_flight:
                self.stats.overloaded += 1
                await self._publish(reply, error_reply(incoming.id, OVERLOADED_ERROR.to_wire()))
                return
            self._start(self._answer(route, route_stats, incoming.data, incoming.id, reply, call))
        else:
            self.stats.events_total += 1
            while self.stats.in_flight >= self.max_in_flight:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            self._start(self._consume(route, route_stats, incoming.data, call))

    def _start(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        self.stats.in_flight += 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.stats.in_flight -= 1
        self._slot_freed.set()

    async def _answer(
        self, route: Route, route_stats: RouteStats, data: Any, request_id: Any, reply: str, call: Call | None
    ) -> None:
        try:
            result = await route.invoke(data, self.ctx, call, route_stats)
            if result is NO_RESPONSE:
                await self._publish(reply, disposed_reply(request_id))
            elif route.streaming:
                await self._stream(result, request_id, reply)
            else:
                await self._publish(reply, response_reply(request_id, result))
        except RpcError as err:
            await self._publish(reply, error_reply(request_id, err.to_wire()))
        except asyncio.CancelledError:
            raise
        except Exception:  # the router maps handler errors; this is a bug in the transport itself
            log.exception("unexpected error answering a NATS request", route=route.route)
            await self._publish(reply, error_reply(request_id, INTERNAL_ERROR.to_wire()))

    async def _stream(self, items: AsyncIterator[Any], request_id: Any, reply: str) -> None:
        """Each item as NestJS's send() frames a synchronously completing Observable: the last item carries
        `isDisposed` (NestJS buffers a tick's values and marks the last); an empty stream is `{isDisposed}`."""
        held: list[Any] = []
        async for item in items:
            if held:
                await self._publish(reply, stream_item_reply(request_id, held.pop()))
            held.append(item)
        await self._publish(reply, response_reply(request_id, held[0]) if held else disposed_reply(request_id))

    async def _consume(self, route: Route, route_stats: RouteStats, data: Any, call: Call | None) -> None:
        try:
            await route.consume(data, self.ctx, call, route_stats)
        except RpcError as err:
            self.stats.events_failed += 1
            log.warning("event handler failed", route=route.route, code=err.code, error=err.message)

    async def _publish(self, subject: str, reply: dict[str, Any]) -> None:
        """Send one reply frame (no reply subject: NestJS answers nothing, neither do we)."""
        if not subject:
            return
        try:
            body = encode_json(reply)
        except (TypeError, ValueError) as exc:
            self.stats.reply_errors += 1
            log.error("reply could not be serialised", error=str(exc))
            body = encode_json(error_reply(reply.get("id"), INTERNAL_ERROR.to_wire()))
        try:
            await self.nc.publish(subject, body)
        except Exception as exc:  # closed or the outbound buffer is full: the caller times out
            self.stats.reply_errors += 1
            log.warning("NATS reply not sent", error=f"{type(exc).__name__}: {exc}")

    # --- shutdown

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop taking messages (drain the subscriptions), finish in-flight up to `deadline`, flush, close."""
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
        while self.tasks and loop.time() < end:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, end - loop.time()))
        leftover = list(self.tasks)
        if leftover:
            log.warning("cancelling NATS requests still running at the shutdown deadline", count=len(leftover))
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await self.nc.close()
        self.stats.state = "closed"
