"""What a handler may use: the pool, the named SQL statements, the settings. Nothing of the transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from asyncpg.transaction import Transaction

from booking_rpc.config import Settings
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries
from booking_rpc.db.replica import ReadReplica

Isolation = Literal["read_committed", "repeatable_read", "serializable"]


@asynccontextmanager
async def _rolled_back_unless_cancelled(tx: Transaction) -> AsyncIterator[None]:
    """Start `tx`; commit it on success, roll it back on an exception.

    Cancelled (a deadline, shutdown), maybe mid-query, it sends nothing: asyncpg's own context manager would
    send ROLLBACK, which on a connection with a cancelled query first waits for the server to confirm the
    cancel, and on a database that does not answer (frozen, partitioned) that wait has no deadline left to
    end it. The pool terminates such a connection instead, and PostgreSQL rolls the transaction back.
    """
    await tx.start()
    try:
        yield
    except Exception:
        await tx.rollback()
        raise
    await tx.commit()


def savepoint(conn: asyncpg.Connection) -> AbstractAsyncContextManager[None]:
    """A savepoint inside a `Context.transaction()` (use it, not `conn.transaction()`): rolled back to on an
    exception, and, like the transaction, left alone when the request is cancelled."""
    return _rolled_back_unless_cancelled(conn.transaction())


@dataclass(slots=True)
class Context:
    pool: Pool
    sql: Queries
    settings: Settings
    # Process-wide singletons other layers hang here (metrics, relay wake-up); handlers don't need them.
    extras: dict[str, Any] = field(default_factory=dict)
    # The streaming replica read-only patterns use (BOOKING_RPC_DATABASE_READ_URL); None = the primary.
    replica: ReadReplica | None = None
    # Called after every commit of `transaction()` (the outbox relay's wake-up: the transaction may have
    # written events); a job that writes events in a single statement calls `committed()` itself.
    after_commit: Callable[[], None] | None = None
    # Wait for a pool connection at the head of the queue (the outbox relay's Context).
    pool_first: bool = False

    def committed(self) -> None:
        if self.after_commit is not None:
            self.after_commit()

    @asynccontextmanager
    async def transaction(self, *, isolation: Isolation = "read_committed") -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one explicit transaction, committed on success."""
        async with (
            self.pool.acquire(first=self.pool_first) as conn,
            _rolled_back_unless_cancelled(conn.transaction(isolation=isolation)),
        ):
            yield conn
        if self.after_commit is not None:
            self.after_commit()

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection for reads and single statements (each its own transaction)."""
        return self.pool.acquire(first=self.pool_first)

    def read_connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection for a read-only pattern: the replica while it is up and within read_max_lag, else the
        primary. Only for reads whose answer may be a little stale: never for a write, nor for a check that
        decides capacity (the hold statement re-checks everything on the primary)."""
        if self.replica is None:
            return self.pool.acquire()
        return self.replica.connection()
