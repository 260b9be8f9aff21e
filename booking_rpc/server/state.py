"""What every connection of one server shares (uvicorn's ServerState): the counters, the set of open
connections, and whether the server is draining. The protocol gets this, never the Server itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from booking_rpc.server.stats import ServerStats


class Connection(Protocol):
    """What shutdown needs of an open connection: its running requests, and a way to close it."""

    tasks: set[asyncio.Task[None]]

    def close(self) -> None: ...


@dataclass(slots=True)
class ServerState:
    stats: ServerStats = field(default_factory=ServerStats)
    connections: set[Connection] = field(default_factory=set)
    shutting_down: bool = False
    # Set when a connection finishes its last request while the server drains (shutdown waits on it).
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Consumed events being handled, on every connection: an event has no reply to wait for, so its
    # handling outlives the connection that brought it (it is not cancelled when the peer goes), and a
    # graceful shutdown waits for it like for a request.
    events: set[asyncio.Task[None]] = field(default_factory=set)

    def on_idle(self) -> None:
        if self.shutting_down:
            self.idle.set()
