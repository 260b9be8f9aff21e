"""A nats-py client whose close() works whatever state the connection is in: the NATS transport's
(server/nats_client.py) and the JetStream sink's (events/jetstream.py), which may not import each other's layer.

While reconnecting, nats-py's close() cancels its reconnect Task, which may be waiting for the old socket to
close (StreamWriter.wait_closed: as long as a peer that stopped reading leaves bytes unsent); that cancels
the stream's close future, which close() then awaits itself: CancelledError. It also writes the commands
queued meanwhile to the old socket and drains it, which on such a peer waits for ever.

This leans on internals of nats-py 2.x (`_status`, `_pending`/`_pending_data_size`, `_transport` and
TcpTransport's `_io_writer`, the client's and its subscriptions' Tasks), pinned below 3 in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.aio.transport import TcpTransport

_log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0  # seconds nats-py's close() gets; then the connection is dropped as it stands


class SafeCloseClient(Client):
    async def close(self) -> None:
        """nats-py's close(), whatever state the connection is in: over within CLOSE_TIMEOUT, raising nothing of
        nats-py's (a cancellation of the caller still propagates), with the socket closed and no Task of the
        client's left pending.

        When not connected the old socket is aborted first (what it and the queue hold can go nowhere now),
        and close() runs in a Task of its own, bounded: what it raises stays there."""
        if not self.is_connected:
            self._drop_connection()
        closing = asyncio.get_running_loop().create_task(super().close(), name="nats-close")
        try:
            await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
            if not closing.done():
                _log.warning("nats: close() did not finish in %s s; the connection is dropped", CLOSE_TIMEOUT)
        finally:
            self._status = Client.CLOSED  # also when close() never ran (the caller cancelled at once)
            self._drop_connection()
            await self._end_tasks(closing)

    def _drop_connection(self) -> None:
        """Abort the socket (its unsent bytes are dropped) and the commands queued for it."""
        self._pending.clear()
        self._pending_data_size = 0
        transport = self._transport
        if type(transport) is TcpTransport and transport._io_writer is not None:
            transport._io_writer.transport.abort()

    def _own_tasks(self) -> list[asyncio.Task[None] | None]:
        """The client's Tasks (a subclass adds those of its own)."""
        subscriptions = [sub._wait_for_msgs_task for sub in self._subs.values()]
        tasks = [self._reading_task, self._ping_interval_task, self._flusher_task, self._reconnection_task]
        return [*tasks, *subscriptions]

    async def _end_tasks(self, closing: asyncio.Task[None]) -> None:
        """Cancel and await the client's Tasks that close() left running (it may have stopped half way)."""
        running = {task for task in [closing, *self._own_tasks()] if task is not None and not task.done()}
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CLOSE_TIMEOUT)
        if closing.done() and not closing.cancelled() and closing.exception() is not None:
            _log.debug("nats: close() failed: %r", closing.exception())
