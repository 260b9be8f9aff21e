"""Read/write flow control for one connection (after uvicorn's flow_control.py).

Reading pauses while the peer has too many requests in flight with us, or while the transport's write
buffer is over its high-water mark (the peer reads our replies slower than it sends requests). Either
condition alone keeps reading paused; reading resumes only when both have cleared.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    __slots__ = ("_in_flight_paused", "_reading_paused", "_transport", "_writable", "_writing_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._reading_paused = False
        self._writing_paused = False
        self._in_flight_paused = False
        # made only when someone waits for a paused writer: an Event (with its deque) per idle connection
        # would be most of what the connection costs
        self._writable: asyncio.Event | None = None

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def _update(self) -> None:
        want_paused = self._writing_paused or self._in_flight_paused
        if want_paused and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        elif not want_paused and self._reading_paused:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._writable is not None:
            self._writable.clear()
        self._update()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._writable is not None:
            self._writable.set()
        self._update()

    async def wait_writable(self) -> None:
        if not self._writing_paused:
            return
        if self._writable is None:
            self._writable = asyncio.Event()
        await self._writable.wait()

    def connection_lost(self) -> None:
        # Release anyone waiting to write: the connection is gone, they will see it closed.
        self._writing_paused = False
        if self._writable is not None:
            self._writable.set()

    def set_in_flight_paused(self, paused: bool) -> None:
        if paused != self._in_flight_paused:
            self._in_flight_paused = paused
            self._update()
