"""The outbox relay's JetStream sink: every outbox row published to a durable, deduplicating stream.

The relay treats it as one more subscriber (`JETSTREAM_SUBSCRIBER`, every event type) with the same
claim, per-aggregate order, retry/backoff/dead handling and metrics as the TCP subscribers; only the send
differs. A row counts as delivered once the stream's PubAck arrived; a duplicate ack (the stream already
has that `Nats-Msg-Id`, e.g. a relay that crashed after publishing, before it committed) is a delivery too.
A batch holds at most one row per aggregate (the claim takes per aggregate only its oldest undelivered
event), so its rows are published at once and an aggregate's next event is claimed only after the previous
one's ack was recorded.

The subject is the event type and the body the NestJS event envelope `{pattern, data}` (what `ClientNats.emit`
writes), with the trace context of the transaction that wrote the event in the W3C headers, so a JetStream publish also reaches a live NestJS `ServerNats` `@EventPattern(event_type)`, and
JetStream consumers can replay from any point. The stream is created (file storage, subjects covering
every published event type) on the first connection if it is missing. NATS down never blocks the relay's
start: the connection is made and kept in the background, and while it is down the sink is not `ready`,
so nothing is claimed and no attempt is spent (an outage does not park events as dead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from nats.aio.msg import Msg
from nats.js.api import Header, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from booking_rpc.models.events import PUBLISHED_EVENTS
from booking_rpc.nats_close import SafeCloseClient
from booking_rpc.tracing import nats_headers
from booking_rpc.wire.json_codec import encode_json
from booking_rpc.wire.messages import event_message

log = structlog.get_logger(__name__)

PUBLISH_TIMEOUT = 5.0
NO_RESPONDERS = "503"  # the status NATS replies with when no stream takes the subject


def stream_subjects() -> list[str]:
    """Subjects that cover every published event type: one `<first token>.>` per family."""
    return sorted({f"{event.event_type.split('.', 1)[0]}.>" for event in PUBLISHED_EVENTS})


def event_body(event_type: str, payload: Any) -> bytes:
    """The NestJS event envelope, as ClientNats.emit writes it."""
    return encode_json(event_message(event_type, payload))


class JetStreamSink:
    def __init__(
        self,
        servers: list[str],
        stream: str,
        *,
        duplicate_window: float = 120.0,
        on_ready: Callable[[], None] | None = None,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.servers = servers
        self.credentials = credentials or {}  # user/password or token (else the URLs' own, if any)
        self.stream = stream
        self.duplicate_window = duplicate_window
        self.on_ready = on_ready
        self.nc = SafeCloseClient()  # closes even with NATS gone deaf mid-reconnect
        self.js: JetStreamContext | None = None
        self.state = "connecting"  # connecting | connected | reconnecting | closed
        self.stream_ready = False
        self.duplicates = 0
        self._connector: asyncio.Task[None] | None = None
        self._recreate: asyncio.Task[None] | None = None
        # PubAcks: each publish's reply subject (under one subscription) and the future its ack resolves
        self._acks_prefix: str | None = None
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._ack_seq = 0

    @property
    def ready(self) -> bool:
        return self.state == "connected" and self.stream_ready

    def start(self) -> None:
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect(), name="jetstream-sink-connect")

    async def _connect(self) -> None:
        try:
            await self.nc.connect(
                servers=self.servers,
                name="booking-rpc-outbox-relay",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **self.credentials,  # type: ignore[arg-type]
            )
            self.js = self.nc.jetstream(timeout=PUBLISH_TIMEOUT)
            self.state = "connected"
            await self._ensure_stream()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("JetStream sink could not start", error=f"{type(exc).__name__}: {exc}")

    async def _ensure_stream(self) -> None:
        """Create the stream if missing (several relays may race: a second create of the same config is fine)."""
        assert self.js is not None
        config = StreamConfig(
            name=self.stream,
            subjects=stream_subjects(),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
        )
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("JetStream stream created", stream=self.stream, subjects=config.subjects)
        self.stream_ready = True
        if self.on_ready is not None:
            self.on_ready()

    async def _ensure_stream_logged(self) -> None:
        try:
            await self._ensure_stream()
        except Exception as exc:
            log.warning("JetStream stream could not be made", stream=self.stream, error=f"{type(exc).__name__}: {exc}")

    async def _on_error(self, exc: Exception) -> None:
        log.warning("JetStream sink connection error", error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        if self.state == "connected":
            self.state = "reconnecting"
            log.warning("JetStream sink disconnected, reconnecting")

    async def _on_reconnected(self) -> None:
        self.state = "connected"
        log.info("JetStream sink reconnected")
        if not self.stream_ready:
            await self._ensure_stream_logged()
        elif self.on_ready is not None:
            self.on_ready()

    async def _ack_prefix(self) -> str:
        """The reply subject prefix of this sink's PubAcks: one subscription for every publish's ack."""
        if self._acks_prefix is None:
            prefix = self.nc.new_inbox()
            await self.nc.subscribe(f"{prefix}.*", cb=self._on_ack)
            self._acks_prefix = f"{prefix}."
        return self._acks_prefix

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, rows: list[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
        """Publish rows (at most one per aggregate) at once: (rows acked, (row, error) for the others).

        Every row is written at once, each with a reply subject under one ack subscription, then the acks
        are awaited together. (`JetStreamContext.publish` is a request per message, with a Task, a timer and
        a parsed dataclass each: it capped the relay near 2,000 events/s, bench/events.py --sink jetstream.)
        """
        if self.js is None or not self.ready:
            return [], [(row, "NATS not connected") for row in rows]
        prefix = await self._ack_prefix()
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[Msg]]] = []
        try:
            for row in rows:
                self._ack_seq += 1
                reply = f"{prefix}{self._ack_seq}"
                future: asyncio.Future[Msg] = loop.create_future()
                self._acks[reply] = future
                waiting.append((reply, future))
                headers = {
                    **nats_headers(row.get("trace_context")),
                    Header.MSG_ID: str(row["id"]),
                    Header.EXPECTED_STREAM: self.stream,
                }
                await self.nc.publish(
                    row["event_type"], event_body(row["event_type"], row["payload"]), reply=reply, headers=headers
                )
            await asyncio.wait([future for _, future in waiting], timeout=PUBLISH_TIMEOUT)
        except Exception as exc:  # the connection closed or its buffer is full mid-batch
            lost = ConnectionError(f"{type(exc).__name__}: {exc}")
            for _, pending in waiting:
                if not pending.done():
                    pending.set_exception(lost)
        delivered: list[Any] = []
        failed: list[tuple[Any, str]] = []
        for row, (reply, future) in zip(rows, waiting, strict=False):
            self._acks.pop(reply, None)
            problem = self._ack_error(future)
            if problem is None:
                delivered.append(row)
            else:
                failed.append((row, problem))
        for row in rows[len(waiting) :]:
            failed.append((row, "not published: the batch stopped before it"))
        return delivered, failed

    def _ack_error(self, future: asyncio.Future[Msg]) -> str | None:
        """None for a PubAck (a duplicate's too), else what went wrong."""
        if not future.done():
            future.cancel()
            return f"TimeoutError: no PubAck within {PUBLISH_TIMEOUT} s"
        if future.exception() is not None:
            exc = future.exception()
            return f"{type(exc).__name__}: {exc}"
        msg = future.result()
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
            if self.stream_ready:
                # the stream is gone (deleted, or a NATS server with a fresh store): make it again
                self.stream_ready = False
                self._recreate = asyncio.create_task(self._ensure_stream_logged())
            return "NoStreamResponseError: no stream takes the subject"
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return f"unreadable PubAck: {msg.data[:100]!r}"
        if not isinstance(ack, dict):
            return f"unreadable PubAck: {msg.data[:100]!r}"
        if "error" in ack:
            err = ack["error"]
            return f"APIError: {err.get('description', err) if isinstance(err, dict) else err}"
        if ack.get("duplicate"):
            self.duplicates += 1
        return None

    async def close(self) -> None:
        self.state = "closed"
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.nc.close()  # bounded and raising nothing, reconnecting or not (SafeCloseClient.close)
