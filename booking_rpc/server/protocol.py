"""One client connection: bytes in → codec → router → reply frames out.

The codec (sans-IO) turns bytes into messages; this module only does I/O around it: flow control,
limits, timers and running handlers concurrently so replies go out as each request finishes,
correlated by id (NestJS semantics). A framing error closes this connection only, without a reply,
as NestJS does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import structlog

from booking_rpc.errors import INTERNAL_ERROR, OVERLOADED_ERROR, RpcError
from booking_rpc.router import CLIENT_SUBJECT, NO_RESPONSE, Call, Route, Router
from booking_rpc.server.dispatch import start_call
from booking_rpc.server.flow_control import FlowControl
from booking_rpc.server.state import ServerState
from booking_rpc.server.stats import ServerStats
from booking_rpc.server.tls import client_subject
from booking_rpc.wire.codec import Codec, FrameDecoder
from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.messages import (
    Request,
    classify,
    disposed_reply,
    error_reply,
    no_handler_reply,
    response_reply,
    stream_item_reply,
)

log = structlog.get_logger(__name__)


@dataclass(slots=True, frozen=True)
class Limits:
    max_frame: int | None = None  # in the codec's unit; None = the codec's default (8 Mi)
    incomplete_message_timeout: float = 30.0
    max_send_buffer: int = 128 * 1024 * 1024
    max_in_flight: int = 256
    # requests in flight in the whole server (every connection) before a new one is refused with OVERLOADED
    max_requests_in_flight: int = 1024
    idle_timeout: float = 0.0
    max_connections: int = 0


_UNKNOWN: Any = object()


class RpcProtocol(asyncio.Protocol):
    # One per open connection, and most connections sit idle: slots instead of a __dict__, and the backlog
    # deque (and FlowControl's Event) exist only once needed (bench/connections.py measures KB/connection).
    __slots__ = (
        "_closed",
        "_dispatching",
        "_flush_scheduled",
        "_idle_timer",
        "_incomplete_timer",
        "_loop",
        "_outgoing",
        "_peer",
        "_subject",
        "backlog",
        "codec",
        "ctx",
        "decoder",
        "flow",
        "limits",
        "router",
        "state",
        "stats",
        "tasks",
        "transport",
    )

    def __init__(self, state: ServerState, router: Router, ctx: Any, codec: Codec, limits: Limits) -> None:
        self.state = state
        self.router = router
        self.ctx = ctx
        self.codec = codec
        self.limits = limits
        self.stats: ServerStats = state.stats
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.decoder: FrameDecoder = codec.new_decoder(limits.max_frame)
        self.tasks: set[asyncio.Task[None]] = set()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._dispatching = False
        # Messages decoded beyond the in-flight cap wait here (reading is paused meanwhile).
        self.backlog: deque[Any] | None = None
        self._peer: Any = _UNKNOWN
        self._subject: Any = _UNKNOWN
        self._incomplete_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()

    @property
    def peer(self) -> Any:
        """The peer's address, read once it is first needed (an idle connection never needs it)."""
        if self._peer is _UNKNOWN:
            self._peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return self._peer

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its interface
        self.transport = transport = cast(asyncio.Transport, transport)
        self.stats.connections_total += 1
        limit = self.limits.max_connections
        if limit and len(self.state.connections) >= limit:
            self.stats.connections_refused += 1
            self._closed = True
            transport.abort()
            return
        # TCP_NODELAY: asyncio and uvloop both set it on every accepted TCP socket already
        self.flow = FlowControl(transport)
        self.state.connections.add(self)
        self.stats.connections_open += 1
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.state.connections:
            self.state.connections.discard(self)
            self.stats.connections_open -= 1
        self._closed = True
        self._cancel_timers()
        if self.flow is not None:
            self.flow.connection_lost()
        # requests are cancelled (nobody is left to read their reply); events run on to their end or deadline
        events = self.state.events
        for task in list(self.tasks):
            if task not in events:
                task.cancel()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            # NestJS handles what came before the bad frame, then closes without a reply.
            for message in exc.messages:
                self._dispatch(message)
            self.stats.frame_errors[exc.kind] += 1
            log.warning("frame error, closing connection", peer=self.peer, kind=exc.kind, error=str(exc))
            self.close()
            return
        limit = self.limits.max_in_flight
        self._dispatching = True  # replies of eager handlers in this batch share one write
        try:
            for message in messages:
                if self.backlog or len(self.tasks) >= limit:
                    if self.backlog is None:
                        self.backlog = deque()
                    self.backlog.append(message)
                else:
                    self._dispatch(message)
        finally:
            self._dispatching = False
        if self._outgoing:
            # what this batch answered at once (eager replies, OVERLOADED refusals) leaves now, in one write,
            # not after the first steps of every task the batch started
            self._flush()
        if self.backlog and self.flow is not None:
            self.flow.set_in_flight_paused(True)
        self._arm_incomplete_timer()
        if self._idle_timer is not None:
            self._arm_idle_timer()

    # --- dispatch

    def _dispatch(self, message: Any) -> None:
        self.stats.frames_in += 1
        incoming = classify(message)
        route = self.router.lookup(incoming.route)
        if isinstance(incoming, Request):
            self.stats.requests_total += 1
            if route is None:
                self.stats.unroutable_requests += 1
                self.write(no_handler_reply(incoming.id))
                return
            if not route.eager and self.stats.in_flight >= self.limits.max_requests_in_flight:
                # beside the per-connection cap, which only pauses reading, a process-wide one: the excess of
                # a flood over many connections is answered at once, instead of queueing without bound
                self.stats.overloaded += 1
                self.write(error_reply(incoming.id, OVERLOADED_ERROR.to_wire()))
                return
            self._start(self._answer(route, incoming.data, incoming.id, self._call(incoming.metadata)), route.eager)
        else:
            self.stats.events_total += 1
            if route is None:
                self.stats.unroutable_events += 1
                log.debug("no handler for event", pattern=incoming.pattern)
                return
            self._start(self._consume(route, incoming.data, self._call(incoming.metadata)), route.eager, event=True)

    def _call(self, metadata: dict[str, Any] | None) -> Call | None:
        # Only middleware reads a Call: without any, none is built (the hot path stays as it was).
        if not self.router.middleware:
            return None
        call = Call("tcp", metadata, self.peer)
        subject = self._subject
        if subject is _UNKNOWN:  # the certificate is the connection's: read it once, not per request
            peercert = self.transport.get_extra_info("peercert") if self.transport is not None else None
            subject = self._subject = client_subject(peercert)
        if subject is not None:
            call.attrs[CLIENT_SUBJECT] = subject
        return call

    def _start(self, coro: Coroutine[Any, Any, None], eager: bool, *, event: bool = False) -> None:
        task = start_call(self._loop, coro, eager)  # eager: ping and echo answer here, with no Task
        if task is None:
            return
        self.tasks.add(task)
        if event:
            self.state.events.add(task)
        self.stats.in_flight += 1
        task.add_done_callback(self._task_done)
        if len(self.tasks) >= self.limits.max_in_flight and self.flow is not None:
            self.flow.set_in_flight_paused(True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.state.events.discard(task)
        self.stats.in_flight -= 1
        limit = self.limits.max_in_flight
        backlog = self.backlog
        while backlog and len(self.tasks) < limit and not self._closed:
            self._dispatch(backlog.popleft())
        if self.flow is not None and not self.backlog and len(self.tasks) <= limit // 2:
            self.flow.set_in_flight_paused(False)
        if not self.tasks:
            self.state.on_idle()

    async def _answer(self, route: Route, data: Any, request_id: Any, call: Call | None) -> None:
        try:
            result = await route.invoke(data, self.ctx, call)
            if result is NO_RESPONSE:
                self.write(disposed_reply(request_id), final=True)
            elif route.streaming:
                await self._stream(result, request_id)
            else:
                self.write(response_reply(request_id, result), final=True)
        except RpcError as err:
            self.write(error_reply(request_id, err.to_wire()), final=True)
        except asyncio.CancelledError:
            raise
        except Exception:  # the router maps handler errors; this is a bug in the transport itself
            log.exception("unexpected error answering a request", route=route.route)
            self.write(error_reply(request_id, INTERNAL_ERROR.to_wire()))

    async def _stream(self, items: AsyncIterator[Any], request_id: Any) -> None:
        async for item in items:
            if self._closed:
                return
            self.write(stream_item_reply(request_id, item))
            if self.flow is not None and self.flow.writing_paused:
                await self._drain()
        self.write(disposed_reply(request_id))

    async def _drain(self) -> None:
        # Streams produce without bound: wait while the peer is not reading our replies.
        if self.flow is not None and not self._closed:
            await self.flow.wait_writable()

    async def _consume(self, route: Route, data: Any, call: Call | None) -> None:
        try:
            await route.consume(data, self.ctx, call)
        except RpcError as err:
            self.stats.events_failed += 1
            log.warning("event handler failed", route=route.route, code=err.code, error=err.message)

    # --- output

    def write(self, reply: dict[str, Any], *, final: bool = False) -> None:
        transport = self.transport
        if transport is None or self._closed:
            return
        try:
            frame = self.codec.encode(reply)
        except (TypeError, ValueError) as exc:
            # NestJS logs and sends nothing, leaving the caller hanging; we answer with an error instead.
            self.stats.reply_encode_errors += 1
            log.error("reply could not be serialised", error=str(exc))
            frame = self.codec.encode(error_reply(reply.get("id"), INTERNAL_ERROR.to_wire()))
        # Replies finished in the same loop iteration leave in one write (one syscall), like NestJS's
        # nextTick flush: under load this is most of the difference in CPU per request. The final reply of
        # the last request in flight on its connection has no one to share a write with: it leaves now,
        # one loop iteration (an epoll_wait) sooner.
        if final and not self._dispatching and not self._outgoing and len(self.tasks) <= 1 and not self.backlog:
            self._outgoing.append(frame)
            self._flush()
            return
        self._outgoing.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or self._closed or not self._outgoing:
            self._outgoing.clear()
            return
        data = self._outgoing[0] if len(self._outgoing) == 1 else b"".join(self._outgoing)
        self._outgoing.clear()
        transport.write(data)
        self.stats.writes += 1
        if transport.get_write_buffer_size() > self.limits.max_send_buffer:
            self.stats.dropped["send_buffer_full"] += 1
            log.warning("peer is not reading its replies, dropping it", peer=self.peer)
            self.abort()

    # --- timers and closing

    def _arm_incomplete_timer(self) -> None:
        if self._incomplete_timer is not None:
            self._incomplete_timer.cancel()
            self._incomplete_timer = None
        timeout = self.limits.incomplete_message_timeout
        if timeout > 0 and self.decoder.has_partial and not self._closed:
            self._incomplete_timer = self._loop.call_later(timeout, self._on_incomplete_timeout)

    def _on_incomplete_timeout(self) -> None:
        self.stats.dropped["incomplete_message_timeout"] += 1
        log.warning("peer stalled mid-frame, dropping it", peer=self.peer)
        self.abort()

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.limits.idle_timeout > 0 and not self._closed:
            self._idle_timer = self._loop.call_later(self.limits.idle_timeout, self._on_idle_timeout)

    def _on_idle_timeout(self) -> None:
        if self.tasks:
            self._arm_idle_timer()
            return
        self.stats.dropped["idle_timeout"] += 1
        self.close()

    def _cancel_timers(self) -> None:
        for timer in (self._incomplete_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._incomplete_timer = self._idle_timer = None

    def close(self) -> None:
        """Half-close like NestJS's `socket.end()`: what is already written still reaches the peer."""
        if self.transport is not None and not self._closed:
            self._flush()
            self._closed = True
            self._cancel_timers()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self._cancel_timers()
            self.transport.abort()

    @property
    def busy(self) -> bool:
        return bool(self.tasks)
