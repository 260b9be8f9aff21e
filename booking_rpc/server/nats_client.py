"""nats-py's client with a direct path for the transport's subscriptions, both ways, and a read path without a Task.

nats-py hands each message of a callback subscription through an asyncio.Queue to a per-subscription Task
that awaits the callback, and each `publish()` is a coroutine that queues a flush; under load that machinery
costs more CPU than the service's own work for a small request (bench/nats.py). Here a message of a
subscription registered with `deliver_to` goes from the protocol parser straight to a plain function, and
`send` takes a batch of ready PUB commands at once, without awaiting: written to the socket at once when
nothing of nats-py's waits ahead of them, else queued the way `publish()` queues one (into the client's
pending buffer, then its flusher writes; reconnect buffering stays nats-py's). Everything else (other subscriptions, JetStream, requests) is nats-py's own.

Reading: nats-py's `_read_loop` Task awaits a StreamReader and then its parser coroutine, a Task wake-up
and a few coroutines per socket read; the read is a fixed cost shared by the messages it carries, so it
weighs most when several workers share the load (fewer messages per read, bench/nats.py). Here the
connection's data goes from the transport's `data_received` straight into nats-py's parser, driven eagerly
(`start_call`: it runs to its end at once unless a callback of nats-py's really waits, then it continues in
a Task and later data waits behind it, reading paused); the read loop Task only waits for the connection's
end and ends as nats-py's would (EOF or a socket error: reconnect). The replies of one read leave in one
write at its end (`after_read`). Only over a TCP (or TLS) connection; a WebSocket one keeps nats-py's loop.

This leans on internals of nats-py 2.x (`_process_msg`, `_read_loop`, `_ps`, `_process_op_err`, `_pending`/
`_pending_data_size`, `_flush_queue`, `_transport` and TcpTransport's `_io_reader`/`_io_writer`, a
subscription's `_id` and `_pending_queue`), pinned below 3 in pyproject.toml; tests/server/test_nats.py
exercises each. Its close() is booking_rpc/nats_close.py's, which the JetStream sink's client shares.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from nats import errors
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport

from booking_rpc.nats_close import SafeCloseClient
from booking_rpc.server.dispatch import start_call

_log = logging.getLogger(__name__)

# (reply subject, body, headers or None) of one message of a direct subscription
Deliver = Callable[[bytes, bytes, dict[str, str] | None], None]


def pub_command(subject: bytes, payload: bytes) -> bytes:
    """One PUB without a reply subject: what `publish(subject, payload)` writes."""
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


class _ParserFeed(asyncio.Protocol):
    """Stands in for the connection's StreamReaderProtocol while the client reads: data goes to the client's
    parser, everything else (EOF, the connection's loss, write flow control for `drain()`) to the stream
    protocol as before."""

    def __init__(self, client: DirectClient, stream: asyncio.StreamReaderProtocol) -> None:
        self.client = client
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        self.client._feed(data)

    def eof_received(self) -> bool | None:
        self.client._end_read(None)
        return self.stream.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._end_read(exc)
        self.stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        self.stream.resume_writing()


class DirectClient(SafeCloseClient):
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Deliver] = {}
        self.wants_headers = True  # False: skip parsing headers nobody reads
        self.reading = False  # True while a read's data is parsed: what is sent then waits for after_read
        self.after_read: Callable[[], None] = lambda: None  # called once each read's data is parsed
        self._connection: asyncio.Transport | None = None  # the socket's transport while _ParserFeed reads it
        self._read_ended: asyncio.Future[BaseException | None] | None = None  # why reading stopped
        self._parsing: asyncio.Task[None] | None = None  # a parse that waits on something
        self._unparsed: list[bytes] = []  # data that arrived meanwhile
        self._ends_after_parse: tuple[BaseException | None] | None = None  # an end met during that parse

    async def _read_loop(self) -> None:
        transport = self._transport
        if type(transport) is not TcpTransport or transport._io_reader is None or transport._io_writer is None:
            await super()._read_loop()
            return
        # a socket's (or TLS's) transport: reads and writes
        reader, connection = transport._io_reader, cast(asyncio.Transport, transport._io_writer.transport)
        stream = connection.get_protocol()
        # an end that came before this (even with data still buffered: not at_eof() yet) went to the stream
        # protocol, and _ParserFeed would never hear of it
        ended_already = reader._eof or reader.exception() is not None  # type: ignore[attr-defined]
        if ended_already or not isinstance(stream, asyncio.StreamReaderProtocol):
            await super()._read_loop()  # it meets the end as it would
            return
        ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._read_ended, self._connection = ended, connection
        connection.set_protocol(_ParserFeed(self, stream))
        try:
            buffered: bytearray = reader._buffer  # type: ignore[attr-defined]  # what the handshake read past its last line
            leftover = bytes(buffered)
            buffered.clear()
            if leftover:
                self._feed(leftover)
            reason = await ended
        except asyncio.CancelledError:
            return  # closing or reconnecting: nats-py's loop stops so too
        finally:
            if self._connection is connection:
                self._connection = self._read_ended = None
                connection.set_protocol(stream)
            if self._parsing is not None:
                self._parsing.cancel()
                self._parsing = None
            self._unparsed.clear()
            self._ends_after_parse = None
        if reason is None:  # the server closed the connection
            err = errors.UnexpectedEOF()
            await self._error_cb(err)
            await self._process_op_err(err)
        elif isinstance(reason, errors.ProtocolError):
            await self._process_op_err(errors.ProtocolError())
        elif isinstance(reason, OSError):
            await self._process_op_err(reason)
        else:
            _log.error("nats: encountered error", exc_info=reason)

    def _end_read(self, reason: BaseException | None) -> None:
        if self._read_ended is None or self._read_ended.done():
            return
        if self._parsing is not None:
            # nats-py's loop meets the end only at its next read: the parse under way finishes first and, at
            # EOF, so does the data read before it (a socket error drops that, as StreamReader.read raises)
            self._ends_after_parse = (reason,)
            if reason is not None:
                self._unparsed.clear()
            return
        self._read_ended.set_result(reason)

    def _feed(self, data: bytes) -> None:
        """One read's data into the parser, as nats-py's read loop does, without its Task."""
        if self._read_ended is None or self._read_ended.done():
            return
        if self.is_closed or self.is_reconnecting:
            self._read_ended.cancel()  # nats-py's loop bails out so; whoever set that state takes it from here
            return
        if self._parsing is not None:
            self._unparsed.append(data)
            if self._connection is not None:
                self._connection.pause_reading()
            return
        self.reading = True
        try:
            self._parsing = start_call(asyncio.get_running_loop(), self._ps.parse(data), eager=True)
        except Exception as exc:
            self._end_read(exc)
        finally:
            self.reading = False
        if self._parsing is not None:
            self._parsing.add_done_callback(self._parsed)
        self.after_read()

    def _parsed(self, task: asyncio.Task[None]) -> None:
        """A parse that had to wait is done: the data that queued behind it next."""
        if task is not self._parsing:
            return
        self._parsing = None
        if not task.cancelled() and task.exception() is not None:
            self._end_read(task.exception())
            return
        if self._unparsed:
            data = b"".join(self._unparsed)
            self._unparsed.clear()
            if self._connection is not None:
                self._connection.resume_reading()
            self._feed(data)
        if self._parsing is None and self._ends_after_parse is not None:
            (reason,), self._ends_after_parse = self._ends_after_parse, None
            self._end_read(reason)

    def _own_tasks(self) -> list[asyncio.Task[None] | None]:
        return [*super()._own_tasks(), self._parsing]

    async def flush_all(self) -> None:
        """Return once the server has every command given before this call, SUBs and PUBs included.

        nats-py writes flush()'s PING straight to the socket, ahead of the commands its pending buffer still
        holds, so that PONG proves nothing about them: the first flush lets the flusher write them, the second
        PONG comes after the server has them."""
        await self.flush()
        await self.flush()

    def deliver_to(self, sub: Subscription, deliver: Deliver) -> None:
        """Every later message of `sub` goes to `deliver`, called from the read loop (it must not block); the
        few that may have reached its queue while subscribing are handed over first."""
        queued = sub._pending_queue
        while not queued.empty():
            msg = queued.get_nowait()
            deliver(msg.reply.encode(), msg.data, msg.headers)
        self._direct[sub._id] = deliver

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        deliver = self._direct.get(sid)
        if deliver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        deliver(reply, data, await self._process_headers(headers) if headers and self.wants_headers else None)

    def send(self, commands: list[bytes], count: int) -> bool:
        """Queue `commands` (`count` PUBs) for the flusher, as `publish()` does; False when they cannot go
        (closed, or disconnected with the reconnect buffer full), as `publish()` would raise."""
        data = commands[0] if len(commands) == 1 else b"".join(commands)
        if self.is_closed or self.is_draining_pubs:
            return False
        if not self.is_connected and (
            self._max_pending_size <= 0 or self._pending_data_size + len(data) > self._max_pending_size
        ):
            return False
        self.stats["out_msgs"] += count
        self.stats["out_bytes"] += len(data)
        if self.is_connected and not self._pending and self._transport is not None:
            # nothing queued ahead: straight to the socket, as the flusher would do one loop iteration later
            self._transport.write(data)
            return True
        self._pending.append(data)
        self._pending_data_size += len(data)
        if self.is_connected and self._flush_queue is not None and self._flush_queue.empty():
            self._flush_queue.put_nowait(asyncio.get_running_loop().create_future())
        return True
