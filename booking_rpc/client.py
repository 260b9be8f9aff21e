"""A NestJS-compatible TCP client: `send` (awaitable, with a timeout), `emit`, streamed replies.

Many requests share one connection, correlated by id. Unlike NestJS's ClientTCP it has per-request
timeouts, fails every pending request with a clear reason when the connection drops, and can reconnect
with backoff. Used by the CLI, the outbox relay, the benches and the tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, cast

from opentelemetry import propagate, trace

from booking_rpc.wire.codec import CODECS, Codec
from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.messages import event_message, request_message


class ClientError(Exception):
    """Base of everything this client raises."""


class ConnectionClosed(ClientError):
    """The connection dropped (or was closed) before the reply arrived."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply within the request's timeout."""


class RemoteError(ClientError):
    """The peer answered with `err`; `.err` is the raw value, and our structured fields when present."""

    def __init__(self, err: Any) -> None:
        self.err = err
        if isinstance(err, dict):
            self.code: str | None = err.get("code") if isinstance(err.get("code"), str) else None
            self.status_code: int | None = err.get("statusCode")
            self.message: str = str(err.get("message", err))
            self.details: Any = err.get("details")
        else:
            self.code, self.status_code, self.message, self.details = None, None, str(err), None
        super().__init__(self.message)


_END = object()


class _Pending:
    """One request awaiting its reply frames."""

    __slots__ = ("future", "last", "queue")

    def __init__(self, future: asyncio.Future[Any] | None, queue: asyncio.Queue[Any] | None) -> None:
        self.future = future
        self.queue = queue
        self.last: Any = None


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: Client, codec: Codec) -> None:
        self.client = client
        self.decoder = codec.new_decoder()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its interface
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            for message in exc.messages:
                self.client._on_reply(message)
            if self.transport is not None:
                self.transport.abort()
            return
        on_reply = self.client._on_reply
        for message in messages:
            on_reply(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        if not self.closed.done():
            self.closed.set_result(None)
        self.client._on_connection_lost(self, exc)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    async def drain(self) -> None:
        await self._can_write.wait()


def current_trace_metadata() -> dict[str, str] | None:
    """The current trace context as packet metadata (W3C traceparent/tracestate/baggage, by the global
    propagator), or None when no span is current (tracing off: the frames stay as they were)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


class Client:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        codec: str = "json",
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float = 5.0,
        reconnect: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.codec: Codec = CODECS[codec]
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self._protocol: _ClientProtocol | None = None
        self._pending: dict[str, _Pending] = {}
        self._prefix = os.urandom(5).hex()[:9]
        self._ids = itertools.count(1)
        self._connecting: asyncio.Lock = asyncio.Lock()
        self._closed = False
        self._failures = 0
        self._dispatch_hook: Callable[[], dict[str, str] | None] | None = current_trace_metadata

    @classmethod
    async def connect(cls, host: str, port: int, **options: Any) -> Client:
        client = cls(host, port, **options)
        await client._ensure_connected()
        return client

    # --- connection

    @property
    def connected(self) -> bool:
        p = self._protocol
        return p is not None and p.transport is not None and not p.transport.is_closing()

    async def _ensure_connected(self) -> _ClientProtocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            return protocol
        if self._closed:
            raise ConnectionClosed("the client is closed")
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
                return protocol
            if self._failures and self.reconnect:
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(self._failures, 7)))
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _ClientProtocol(self, self.codec),
                        self.host,
                        self.port,
                        ssl=self.ssl,
                        server_hostname=self.server_hostname if self.ssl else None,
                    ),
                    timeout=self.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                self._failures += 1
                raise ConnectionClosed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            self._failures = 0
            self._protocol = protocol
            return protocol  # type: ignore[return-value]

    def _on_connection_lost(self, protocol: _ClientProtocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        pending, self._pending = self._pending, {}
        reason = ConnectionClosed(f"connection to {self.host}:{self.port} closed" + (f": {exc}" if exc else ""))
        for entry in pending.values():
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(reason)
            if entry.queue is not None:
                entry.queue.put_nowait(reason)

    async def close(self) -> None:
        self._closed = True
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            self._on_connection_lost_closed(protocol)
            try:
                await asyncio.wait_for(asyncio.shield(protocol.closed), timeout=1.0)
            except TimeoutError:
                protocol.transport.abort()

    def _on_connection_lost_closed(self, protocol: _ClientProtocol) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(ConnectionClosed("the client was closed"))
            if entry.queue is not None:
                entry.queue.put_nowait(ConnectionClosed("the client was closed"))

    async def __aenter__(self) -> Client:
        await self._ensure_connected()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- replies

    def _on_reply(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        entry = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if entry is None:
            return  # unknown id: ignored, as NestJS does
        err = message.get("err")
        disposed = message.get("isDisposed")
        if err:
            del self._pending[message["id"]]
            self._deliver_error(entry, RemoteError(err))
            return
        if "response" in message:
            if entry.queue is not None:
                entry.queue.put_nowait(message["response"])
            else:
                entry.last = message["response"]
        if disposed:
            del self._pending[message["id"]]
            if entry.queue is not None:
                entry.queue.put_nowait(_END)
            elif entry.future is not None and not entry.future.done():
                entry.future.set_result(entry.last)

    @staticmethod
    def _deliver_error(entry: _Pending, error: Exception) -> None:
        if entry.queue is not None:
            entry.queue.put_nowait(error)
        elif entry.future is not None and not entry.future.done():
            entry.future.set_exception(error)

    def set_on_dispatch_hook(self, hook: Callable[[], dict[str, str] | None] | None) -> None:
        """What NestJS's ClientProxy#setOnDispatchHook is: `hook()` gives the packet metadata of every
        request and event sent from now on (None: none). The default, `current_trace_metadata`, sends the
        current trace context; `None` sends no metadata at all."""
        self._dispatch_hook = hook

    def _metadata(self, given: dict[str, str] | None = None) -> dict[str, str] | None:
        """The dispatch hook's metadata with the call's own (`given`) over it."""
        hooked = self._dispatch_hook() if self._dispatch_hook is not None else None
        if given is None:
            return hooked
        return given if hooked is None else {**hooked, **given}

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):012x}"

    # --- API

    async def send(
        self, pattern: Any, data: Any, *, timeout: float | None = 30.0, metadata: dict[str, str] | None = None
    ) -> Any:
        """The reply's value (the last one for a stream); RemoteError for an `err` reply.

        `metadata` goes in the packet as NestJS 12's `setOnDispatchHook` puts it (e.g. `{"timeout": "500"}`),
        over the dispatch hook's (by default the current trace context).
        """
        protocol = await self._ensure_connected()
        request_id = self._next_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(future, None)
        assert protocol.transport is not None
        protocol.transport.write(
            self.codec.encode(request_message(pattern, data, request_id, self._metadata(metadata)))
        )
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise RequestTimeout(f"no reply to {pattern!r} within {timeout} s") from exc
        finally:
            self._pending.pop(request_id, None)

    async def emit(self, pattern: Any, data: Any, *, metadata: dict[str, str] | None = None) -> None:
        """An event: written (and drained past the high-water mark), no reply expected. `metadata` as for
        `send`."""
        protocol = await self._ensure_connected()
        assert protocol.transport is not None
        protocol.transport.write(self.codec.encode(event_message(pattern, data, self._metadata(metadata))))
        await protocol.drain()

    async def emit_many(self, events: list[tuple[Any, Any, dict[str, str] | None]]) -> None:
        """Several events (pattern, data, metadata) in one write (the outbox relay's batches), then one drain.

        Each event's metadata is its own (the relay's: the trace of the request that wrote it), not the
        dispatch hook's."""
        protocol = await self._ensure_connected()
        assert protocol.transport is not None
        encode = self.codec.encode
        protocol.transport.write(b"".join(encode(event_message(p, d, m)) for p, d, m in events))
        await protocol.drain()
        if protocol.transport is None or protocol.transport.is_closing():
            raise ConnectionClosed(f"connection to {self.host}:{self.port} closed while sending")

    async def stream(self, pattern: Any, data: Any, *, timeout: float | None = 30.0) -> AsyncIterator[Any]:
        """Each streamed value as it arrives; `timeout` bounds the wait for every next value."""
        protocol = await self._ensure_connected()
        request_id = self._next_id()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[request_id] = _Pending(None, queue)
        assert protocol.transport is not None
        protocol.transport.write(self.codec.encode(request_message(pattern, data, request_id, self._metadata())))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError as exc:
                    raise RequestTimeout(f"no streamed value from {pattern!r} within {timeout} s") from exc
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self._pending.pop(request_id, None)
