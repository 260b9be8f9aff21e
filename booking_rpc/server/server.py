"""Listening sockets, the set of open connections, and graceful shutdown (uvicorn's model).

Shutdown: stop accepting → let every connection finish what it has in flight, up to a deadline →
cancel what is left → close every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ssl
from typing import Any

import structlog

from booking_rpc.router import Router
from booking_rpc.server.protocol import Limits, RpcProtocol
from booking_rpc.server.state import Connection, ServerState
from booking_rpc.server.stats import ServerStats
from booking_rpc.wire.codec import JSON_CODEC, MSGPACK_CODEC, Codec

log = structlog.get_logger(__name__)


class CannotListen(OSError):
    """A listener could not bind its address: the port is taken, the host is not this machine's, …"""

    def __init__(self, listener: str, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.listener, self.host, self.port = listener, host, port

    @property
    def in_use(self) -> bool:
        return self.errno == errno.EADDRINUSE


class Server:
    def __init__(
        self,
        router: Router,
        ctx: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        msgpack_port: int | None = None,
        ssl: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        limits: Limits | None = None,
        **limit_overrides: Any,
    ) -> None:
        self.router = router
        self.ctx = ctx
        self.host = host
        self.requested_port = port
        self.requested_msgpack_port = msgpack_port
        self.ssl = ssl
        # several worker processes each listen on the same port; the kernel spreads connections (Linux)
        self.reuse_port = reuse_port
        base = limits or Limits()
        self.limits = dataclasses.replace(base, **limit_overrides) if limit_overrides else base
        self.state = ServerState()
        self._servers: list[tuple[Codec, asyncio.Server]] = []

    # --- start

    def _hosts(self) -> list[str]:
        # Node 17+ clients may resolve 'localhost' to ::1 first: listen on both families.
        return ["127.0.0.1", "::1"] if self.host == "localhost" else [self.host]

    async def _listen(self, codec: Codec, port: int) -> None:
        loop = asyncio.get_running_loop()
        hosts = self._hosts()
        bound_port = port
        for i, host in enumerate(hosts):
            try:
                srv = await loop.create_server(
                    lambda: RpcProtocol(self.state, self.router, self.ctx, codec, self.limits),
                    host=host,
                    port=bound_port,
                    ssl=self.ssl,
                    reuse_address=True,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
            except OSError as exc:
                if i > 0:  # no IPv6 on this machine: IPv4 alone will do
                    continue
                raise CannotListen(codec.name, host, port, exc) from exc
            self._servers.append((codec, srv))
            bound_port = srv.sockets[0].getsockname()[1]
        log.info("listening", host=self.host, port=bound_port, codec=codec.name, tls=self.ssl is not None)

    async def start(self) -> None:
        await self._listen(JSON_CODEC, self.requested_port)
        if self.requested_msgpack_port is not None:
            await self._listen(MSGPACK_CODEC, self.requested_msgpack_port)

    def _port_of(self, codec: Codec) -> int | None:
        for c, srv in self._servers:
            if c is codec and srv.sockets:
                port: int = srv.sockets[0].getsockname()[1]
                return port
        return None

    @property
    def port(self) -> int:
        port = self._port_of(JSON_CODEC)
        assert port is not None, "server not started"
        return port

    @property
    def msgpack_port(self) -> int | None:
        return self._port_of(MSGPACK_CODEC)

    async def serve_forever(self) -> None:
        if not self._servers:
            await self.start()
        await asyncio.gather(*(srv.serve_forever() for _, srv in self._servers))

    # --- what the connections share

    @property
    def stats(self) -> ServerStats:
        return self.state.stats

    @property
    def connections(self) -> set[Connection]:
        return self.state.connections

    @property
    def shutting_down(self) -> bool:
        return self.state.shutting_down

    # --- shutdown

    def running(self) -> set[asyncio.Task[None]]:
        """Every request and event being handled: those of open connections, and events whose connection
        has closed (they run on: see ServerState.events)."""
        tasks = set(self.state.events)
        for conn in self.connections:
            tasks |= conn.tasks
        return tasks

    def in_flight(self) -> int:
        return len(self.running())

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop accepting, give in-flight requests up to `deadline` seconds, then close everything."""
        self.state.shutting_down = True
        idle = self.state.idle
        for _, srv in self._servers:
            srv.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while self.in_flight() and loop.time() < end:
            idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), timeout=min(0.05, max(0.0, end - loop.time())))
        leftover = list(self.running())
        if leftover:
            log.warning("cancelling requests still running at the shutdown deadline", count=len(leftover))
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        for _, srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), timeout=1.0)
        self._servers.clear()
