"""Reads from a streaming replica (BOOKING_RPC_DATABASE_READ_URL), with the primary as the fallback.

A monitor task measures the replica's staleness every `check_interval` and caches the verdict; a request
only reads a flag. Staleness is measured against the primary's WAL position, not the replica's own clock:
each check reads the primary's current LSN, then the replica's replay LSN, and keeps the recent (time,
primary LSN) pairs; the replica holds everything the primary had written at the latest check time whose LSN
it has replayed, so `now - that time` bounds its lag. An idle primary costs nothing (the replica stays level
with it, lag 0), and a replica cut off from the primary shows a growing lag even though it replays nothing
(pg_last_xact_replay_timestamp alone would call it fresh or stale for the wrong reasons).

Down (cannot connect, an error, not a standby) or lagging beyond `max_lag`: reads go to the primary until a
check finds it good again. A connection error during a read also marks it down at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from booking_rpc.db.pool import Pool, create_pool, is_connection_error, redact
from booking_rpc.db.queries import Queries

log = structlog.get_logger(__name__)

HISTORY = 600  # checks remembered: at one a second, ten minutes of lag can still be measured


class ReadReplica:
    def __init__(
        self,
        dsn: str,
        primary: Pool,
        sql: Queries,
        *,
        max_lag: float,
        check_interval: float,
        pool_size: int,
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        self.dsn = dsn
        self.primary = primary
        self.sql = sql
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.pool_size = pool_size
        self.pool_options = pool_options or {}
        self.pool: Pool | None = None
        self.usable = False  # the one thing a request reads
        self.lag: float | None = None  # seconds; None while down
        self.state = "starting"
        self.reads = 0  # requests served by the replica
        self.fallbacks = 0  # requests sent to the primary because the replica was down or behind
        self._positions: collections.deque[tuple[float, int]] = collections.deque(maxlen=HISTORY)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.check()  # the first verdict before serving; a replica down at start is not fatal
        self._task = asyncio.create_task(self._monitor(), name="read-replica-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.pool is not None:
            await self.pool.close()

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self.check()

    def _set(self, state: str, lag: float | None) -> None:
        self.lag = lag
        self.usable = state == "ok"
        if state != self.state:
            (log.info if state == "ok" else log.warning)(
                "read replica state", state=state, lag_s=lag, max_lag_s=self.max_lag, replica=redact(self.dsn)
            )
        self.state = state

    async def check(self) -> None:
        """Measure the lag once and set the verdict."""
        try:
            async with asyncio.timeout(max(1.0, self.check_interval)):
                if self.pool is None:
                    self.pool = await create_pool(self.dsn, min_size=1, max_size=self.pool_size, **self.pool_options)
                asked_at = time.monotonic()  # the position read after it covers every write committed before
                async with self.primary.acquire() as conn:
                    primary_lsn = int(await conn.fetchval(self.sql["replica.primary_position"]))
                self._positions.append((asked_at, primary_lsn))
                async with self.pool.acquire() as conn:
                    row = await conn.fetchrow(self.sql["replica.replay_position"])
        except Exception as exc:
            if self.state != "down":
                log.warning("read replica unreachable", error=f"{type(exc).__name__}: {exc}")
            self._set("down", None)
            return
        assert row is not None
        if not row["in_recovery"] or row["replayed"] is None:
            self._set("not_a_standby", None)
            return
        replayed = int(row["replayed"])
        # the latest check whose primary position the replica has replayed: it has everything written before
        caught_up_at = max((t for t, lsn in self._positions if lsn <= replayed), default=None)
        lag = time.monotonic() - caught_up_at if caught_up_at is not None else float("inf")
        self._set("ok" if lag <= self.max_lag else "lagging", lag)

    def mark_down(self) -> None:
        self._set("down", None)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A replica connection when it is usable, else a primary one."""
        pool = self.pool
        if not self.usable or pool is None:
            self.fallbacks += 1
            async with self.primary.acquire() as conn:
                yield conn
            return
        try:
            acquired = pool.acquire()
            conn = await acquired.__aenter__()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            self.mark_down()
            self.fallbacks += 1
            async with self.primary.acquire() as conn:
                yield conn
            return
        self.reads += 1
        try:
            yield conn
        except BaseException as exc:
            if is_connection_error(exc):
                self.mark_down()
            await acquired.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await acquired.__aexit__(None, None, None)
