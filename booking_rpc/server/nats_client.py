"""nats-py's client with a direct path for the transport's subscriptions, both ways.

nats-py hands each message of a callback subscription through an asyncio.Queue to a per-subscription Task
that awaits the callback, and each `publish()` is a coroutine that queues a flush; under load that machinery
costs more CPU than the service's own work for a small request (bench/nats.py). Here a message of a
subscription registered with `deliver_to` goes from the protocol parser straight to a plain function, and
`send` takes a batch of ready PUB commands at once, without awaiting: written to the socket at once when
nothing of nats-py's waits ahead of them, else queued the way `publish()` queues one (into the client's
pending buffer, then its flusher writes; reconnect buffering stays nats-py's). Everything else (other subscriptions, JetStream, requests) is nats-py's own.

This leans on internals of nats-py 2.x (`_process_msg`, `_pending`/`_pending_data_size`, `_flush_queue`,
`_transport`, a subscription's `_id` and `_pending_queue`), pinned below 3 in pyproject.toml; tests/server/test_nats.py exercises each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

# (reply subject, body, headers or None) of one message of a direct subscription
Deliver = Callable[[bytes, bytes, dict[str, str] | None], None]


def pub_command(subject: bytes, payload: bytes) -> bytes:
    """One PUB without a reply subject: what `publish(subject, payload)` writes."""
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


class DirectClient(Client):
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Deliver] = {}
        self.wants_headers = True  # False: skip parsing headers nobody reads

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
