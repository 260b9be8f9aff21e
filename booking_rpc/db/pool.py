"""The connection pool: codecs set once per connection, and how connection loss is recognised."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

from booking_rpc import deadline, jsonutil
from booking_rpc.errors import RpcError

log = structlog.get_logger(__name__)

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_ACQUIRE_TIMEOUT = 2.0
# A wait bounded by the request's deadline ends this much before it, so the caller hears why
# (SERVICE_UNAVAILABLE: no connection) rather than only that time ran out (TIMEOUT).
DEADLINE_MARGIN = 0.005
# Sent at connect. A request cancelled mid-query terminates its connection; PostgreSQL notices a vanished
# client only when it next writes, unless it checks the socket while a query runs (PostgreSQL 14+).
SERVER_SETTINGS = {"client_connection_check_interval": "1000"}


class DatabaseUnavailable(Exception):
    """The database cannot be reached at start; the message names host/port/database, never a password."""


def redact(dsn: str) -> str:
    """The DSN with any password replaced by '***' (safe to log)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    if parts.password is None:
        return dsn
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database (keeps ?host=/socket and other options)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def _describe_target(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "(socket)"
    port = parts.port or 5432
    database = parts.path.lstrip("/") or "(default)"
    return f"host={host} port={port} database={database}"


def _encode_json(value: Any) -> str:
    return jsonutil.dumps(value).decode()


def _decode_json(text: str) -> Any:
    return orjson.loads(text)


# The text of asyncpg's own UUID class (a uuid.UUID subclass, which orjson does not write as one), for
# models.common.row_json: its C `__str__`, so a UUID column costs no Python call per value, and any value of
# another type is still a TypeError.
record_uuid_text: Callable[[Any], str] = asyncpg.pgproto.pgproto.UUID.__str__


def _encode_raw_text(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


# The type a statement casts a text value to when it is UTF-8 to hand on as it came (slots.find's page of
# JSON): asyncpg then gives bytes, no str decoded from them and encoded again on the way out. bpchar
# (unconstrained `char`) because a cast from text to it costs PostgreSQL nothing (binary coercible) and
# other clients (pgbench, node-postgres) still read text; no column of the schema has that type
# (tests/db/test_pool.py keeps it so), so no other value comes back as bytes.
RAW_TEXT_TYPE = "bpchar"


class ServiceConnection(asyncpg.Connection):
    """asyncpg's Connection whose `fetchrow` of a statement it has already prepared goes straight to the
    protocol's bind/execute.

    asyncpg's own fetchrow passes through four coroutines (`_execute`, `__execute`, `_do_execute`,
    `_get_statement`), a lambda, a context manager and its statement cache's LRU bookkeeping before it gets
    there: ~21k instructions of a `SELECT 1` that costs ~55k in all (callgrind), the same for every hold.
    What they add is kept: the statement is the one asyncpg's cache holds (prepared by asyncpg's own path on
    first use, and again once asyncpg closes it: LRU eviction, its lifetime, a schema change), the
    connection's command_timeout (the pool's `_bound` choice) bounds it as before, a cancelled caller leaves
    the protocol as asyncpg leaves it, and a cached statement made stale by a schema change is handled as
    asyncpg handles it (re-prepared and run once more outside a transaction). Statements with a timeout or a
    record class of their own, and connections with query loggers, take asyncpg's path.
    """

    __slots__ = ("_prepared",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # query text -> asyncpg's PreparedStatementState of it (the very object its statement cache holds)
        self._prepared: dict[str, Any] = {}

    def fetchrow(  # type: ignore[override]  # asyncpg's is `async def`; this returns the same coroutine type
        self, query: str, *args: Any, timeout: float | None = None, record_class: Any = None
    ) -> Coroutine[Any, Any, asyncpg.Record | None]:
        state = self._prepared.get(query)
        loggers = self._query_loggers  # type: ignore[attr-defined]
        if state is None or state.closed or timeout is not None or record_class is not None or loggers:
            return self._fetchrow_preparing(query, args, timeout, record_class)
        return self._fetchrow_prepared(state, args)

    async def _fetchrow_preparing(
        self, query: str, args: tuple[Any, ...], timeout: float | None, record_class: Any
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await super().fetchrow(query, *args, timeout=timeout, record_class=record_class)
        if timeout is None and record_class is None:
            self._prepared.pop(query, None)
            protocol = self._protocol  # type: ignore[attr-defined]
            state = self._stmt_cache.get((query, protocol.get_record_class(), False))  # type: ignore[attr-defined]
            if state is not None:  # None: not cacheable (asyncpg prepares it anew each time)
                self._prepared[query] = state
        return row

    async def _fetchrow_prepared(self, state: Any, args: tuple[Any, ...]) -> asyncpg.Record | None:
        self._check_open()  # type: ignore[attr-defined]
        with self._stmt_exclusive_section:  # type: ignore[attr-defined]
            try:
                rows = await self._protocol.bind_execute(state, args, "", 1, False, None)  # type: ignore[attr-defined]
            except asyncpg.exceptions.OutdatedSchemaCacheError:
                self._prepared.pop(state.query, None)
                await self.reload_schema_state()
                raise
            except asyncpg.exceptions.InvalidCachedStatementError:
                self._prepared.pop(state.query, None)
                self._drop_global_statement_cache()  # type: ignore[attr-defined]
                if self.is_in_transaction():
                    raise
                rows = None
        if rows is None:  # the statement went stale before it ran: prepared anew, run once more
            return await self._fetchrow_preparing(state.query, args, None, None)
        return rows[0] if rows else None


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs for one connection: json/jsonb <-> Python objects via orjson, and RAW_TEXT_TYPE as bytes.

    asyncpg already gives numeric as Decimal, uuid as UUID and timestamptz as aware UTC datetimes; only
    JSON needs a codec (asyncpg's default hands JSON over as text).
    """
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=_encode_json, decoder=_decode_json, schema="pg_catalog", format="text"
        )
    # binary format: the value's UTF-8 bytes as PostgreSQL sent them (`bytes` of bytes is the same object)
    await conn.set_type_codec(
        RAW_TEXT_TYPE, encoder=_encode_raw_text, decoder=bytes, schema="pg_catalog", format="binary"
    )


class Pool:
    """A lean pool of asyncpg connections: a stack of idle ones, a queue of waiters, nothing per request
    beyond a pop and a push.

    asyncpg's own Pool costs ~45 µs of CPU per acquire/release on the machines we measure (a shielded task,
    timers, a proxy object), a sixth of a `slots.find`. This one keeps only what the service relies on:
    at most `max_size` connections opened on demand (`min_size` at start, so a bad DSN fails the start),
    the most recently used connection handed out first, FIFO waiters, and no session reset: no handler
    leaves session state behind (SET LOCAL and transaction-scoped locks only). A connection that comes back
    closed, inside a transaction, or from a cancelled task (maybe mid-query) is terminated instead of
    reused; one idle longer than `max_idle` is replaced, so a restarted server is not met with stale
    sockets; and one older than `max_lifetime` is retired when it comes back, because PostgreSQL keeps a
    prepared statement's generic plan for the life of the connection, and a plan made while a table was
    small (a seq scan of an empty `reservations`) must not outlive the table's growth.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        max_idle: float = 300.0,
        max_lifetime: float = 600.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
        command_timeout: float | None = None,
        connection_class: type[asyncpg.Connection] = ServiceConnection,
    ) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if connect_timeout <= 0 or acquire_timeout <= 0:
            raise ValueError("connect_timeout and acquire_timeout must be positive")
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._command_timeout = command_timeout
        self._connection_class = connection_class  # a traced one when tracing is on
        self._min_size = min_size
        self._max_size = max_size
        self._max_idle = max_idle
        self._max_lifetime = max_lifetime
        self._born: dict[asyncpg.Connection, float] = {}  # when each open connection was opened
        # each open connection's asyncpg configuration with command_timeout, and without it (see _bound)
        self._configs: dict[asyncpg.Connection, tuple[Any, Any]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[tuple[asyncpg.Connection, float]] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._size = 0  # open connections plus those being opened
        self._closing = False
        # acquires that found every connection busy, and their total wait (read by /metrics)
        self.waits = 0
        self.wait_seconds = 0.0
        # acquires and connects that gave up (acquire_timeout, connect_timeout or the request's deadline)
        self.timeouts = 0

    def _limit(self, timeout: float) -> float:
        """The loop time by which a wait must end: `timeout` from now, and before the request's deadline."""
        now = asyncio.get_running_loop().time()
        left = deadline.remaining()
        if left is not None and left - DEADLINE_MARGIN < timeout:
            timeout = left - DEADLINE_MARGIN
        if timeout <= 0:
            self.timeouts += 1
            raise TimeoutError("no time left to wait for a database connection")
        return now + timeout

    async def _connect(self) -> asyncpg.Connection:
        # A server that accepts but never answers (frozen, partitioned) must not hold a request past its
        # deadline: the whole handshake, codecs included, is bounded.
        try:
            async with asyncio.timeout_at(self._limit(self._connect_timeout)) as scope:
                conn: asyncpg.Connection = await asyncpg.connect(
                    self._dsn,
                    statement_cache_size=1024,
                    command_timeout=self._command_timeout,
                    server_settings=SERVER_SETTINGS,
                    connection_class=self._connection_class,
                )
                try:
                    await init_connection(conn)
                except BaseException:
                    conn.terminate()
                    raise
        except TimeoutError:
            if scope.expired():
                self.timeouts += 1
            raise
        self._born[conn] = time.monotonic()
        if self._command_timeout is not None:
            timed = conn._config  # type: ignore[attr-defined]
            self._configs[conn] = (timed, timed._replace(command_timeout=None))
        return conn

    def _bound(self, conn: asyncpg.Connection) -> asyncpg.Connection:
        """`conn` for its new user, with the per-statement bound that user needs.

        asyncpg bounds each statement by command_timeout with a timer of its own (a loop.call_later and its
        cancel around every statement). Inside a request whose deadline comes before that bound would, the
        deadline already bounds every statement (it cancels the request, the pool terminates the connection:
        deadline.py), so the statements run without asyncpg's timer; anywhere else (jobs, the relay, a request
        with a longer deadline) command_timeout bounds each statement as configured.
        """
        configs = self._configs.get(conn)
        if configs is not None:
            timeout = self._command_timeout
            left = deadline.remaining()
            untimed = left is not None and timeout is not None and left <= timeout
            conn._config = configs[1] if untimed else configs[0]  # type: ignore[attr-defined]
        return conn

    async def open(self) -> None:
        for _ in range(self._min_size):
            self._size += 1
            try:
                conn = await self._connect()
            except BaseException:
                self._size -= 1
                raise
            self._idle.append((conn, time.monotonic()))

    def acquire(self, *, first: bool = False) -> _Acquire:
        """`async with pool.acquire() as conn:` (or `conn = await pool.acquire()` ... `await pool.release(conn)`).

        `first`: when every connection is busy, wait at the head of the queue, not its tail (the outbox relay:
        one batch for many requests' events, whose delivery lag must not grow with the request queue).
        """
        return _Acquire(self, first)

    def _take_idle(self) -> asyncpg.Connection | None:
        """The most recently used idle connection still fit to serve (stale ones dropped on the way), or None."""
        idle = self._idle
        if not idle or self._closing:
            return None
        now = time.monotonic()
        while idle:
            conn, since = idle.pop()
            if conn.is_closed():
                self._discard(conn)
            elif now - since > self._max_idle:
                self._retire(conn)
            else:
                return conn
        return None

    async def _acquire(self, first: bool = False) -> asyncpg.Connection:
        while True:
            if self._closing:
                raise asyncpg.InterfaceError("pool is closing")
            conn = self._take_idle()
            if conn is not None:
                return conn
            now = time.monotonic()
            if self._size < self._max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake_one(None)  # someone else may try (and report) the next connect
                    raise
            limit = self._limit(self._acquire_timeout)
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            if first:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            self.waits += 1
            try:
                async with asyncio.timeout_at(limit) as scope:
                    try:
                        conn_or_none = await waiter
                    except asyncio.CancelledError:
                        if waiter.done() and not waiter.cancelled() and (handed := waiter.result()) is not None:
                            self._put_back(handed)  # handed over just as we were cancelled: pass it on
                        raise
            except TimeoutError:
                if scope.expired():
                    self.timeouts += 1
                raise
            finally:
                self.wait_seconds += time.monotonic() - now
            if conn_or_none is not None:
                return conn_or_none
            # None: a connection was dropped, so there is room to open one; go round again

    def release_now(self, conn: asyncpg.Connection, *, unusable: bool = False) -> None:
        """Return a connection (synchronously). `unusable`: in a state no handler may inherit (its task was
        cancelled mid-query, or it may still LISTEN): close it instead of reusing it."""
        if unusable or conn.is_closed() or conn.is_in_transaction():
            self._discard(conn)
            self._wake_one(None)
        elif time.monotonic() - self._born.get(conn, 0.0) > self._max_lifetime:
            self._retire(conn)
            self._wake_one(None)
        else:
            self._put_back(conn)

    async def release(self, conn: asyncpg.Connection) -> None:
        self.release_now(conn)

    def _put_back(self, conn: asyncpg.Connection) -> None:
        if self._closing:
            self._discard(conn)
            return
        if not self._wake_one(conn):
            self._idle.append((conn, time.monotonic()))

    def _wake_one(self, value: asyncpg.Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(value)
                return True
        return False

    def _discard(self, conn: asyncpg.Connection) -> None:
        """Drop a connection that may be broken or mid-query: close its socket now."""
        self._size -= 1
        self._born.pop(conn, None)
        self._configs.pop(conn, None)
        if not conn.is_closed():
            conn.terminate()

    def _retire(self, conn: asyncpg.Connection) -> None:
        """Drop a healthy connection: a polite close in the background (Terminate message, then EOF)."""
        self._size -= 1
        self._born.pop(conn, None)
        self._configs.pop(conn, None)
        task = asyncio.get_running_loop().create_task(self._close_quietly(conn))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _close_quietly(conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=5.0)
        except Exception:
            conn.terminate()

    def get_size(self) -> int:
        return self._size

    def get_idle_size(self) -> int:
        return len(self._idle)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def close(self) -> None:
        """Close the idle connections; those in use are terminated as they come back."""
        self._closing = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("pool is closing"))
        while self._idle:
            conn, _ = self._idle.pop()
            self._size -= 1
            self._born.pop(conn, None)
            self._configs.pop(conn, None)
            await self._close_quietly(conn)
        if self._retiring:
            await asyncio.gather(*self._retiring)


class _Acquire:
    __slots__ = ("_conn", "_first", "_pool")

    def __init__(self, pool: Pool, first: bool = False) -> None:
        self._pool = pool
        self._first = first
        self._conn: asyncpg.Connection | None = None

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._pool._bound((yield from self._pool._acquire(self._first).__await__()))

    async def __aenter__(self) -> asyncpg.Connection:
        # an idle connection without the coroutine of the waiting path: most acquires find one
        conn = self._pool._take_idle()
        if conn is None:
            conn = await self._pool._acquire(self._first)
        self._conn = conn
        return self._pool._bound(conn)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        # cancelled (a deadline, shutdown) or timed out: maybe mid-query, with a cancel request still due
        unusable = exc_type is not None and (not issubclass(exc_type, Exception) or issubclass(exc_type, TimeoutError))
        self._pool.release_now(conn, unusable=unusable)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    max_lifetime: float = 600.0,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    command_timeout: float | None = None,
    connection_class: type[asyncpg.Connection] = ServiceConnection,
) -> Pool:
    """Open the pool; raise DatabaseUnavailable when the server cannot be reached."""
    # at least one connection at once, so a bad DSN or a dead server fails here and not on a first request
    pool = Pool(
        dsn,
        min_size=max(min_size, 1),
        max_size=max_size,
        max_lifetime=max_lifetime,
        connect_timeout=connect_timeout,
        acquire_timeout=acquire_timeout,
        command_timeout=command_timeout,
        connection_class=connection_class,
    )
    try:
        await pool.open()
    except Exception as exc:
        await pool.close()
        # unreachable, no such database, or refused credentials: all mean "cannot start", say where
        startup_errors = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)
        if is_connection_error(exc) or isinstance(exc, startup_errors):
            raise DatabaseUnavailable(f"cannot reach PostgreSQL at {_describe_target(dsn)}: {exc}") from exc
        raise
    return pool


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionFailureError,  # SQLSTATE class 08
    asyncpg.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,  # pool acquire / connect timed out
)


def is_connection_error(exc: BaseException) -> bool:
    """True when exc means the database is unreachable (the caller answers SERVICE_UNAVAILABLE)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return False  # statement_timeout / lock_timeout is a query problem, not a lost database
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, asyncpg.InternalClientError):
        # asyncpg raises this when the server's "terminating connection" message (57P01) has been read but
        # the socket's close has not yet: the next query finds the protocol mid error-handling. The
        # connection is unusable either way, so it counts as lost.
        return "cannot switch to state" in str(exc)
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc).lower()
        # "pool is closing": the service is shutting down, which a caller should retry elsewhere (503)
        return "closed" in text or "closing" in text or ("connection" in text and "lost" in text)
    return False


# Every class an exception that `is_connection_error` accepts may have: the router's error mapper for
# `database_unavailable` is registered on each (Router.map_error), and it decides per instance.
CONNECTION_LOSS_TYPES: tuple[type[BaseException], ...] = (
    *_CONNECTION_ERRORS,
    asyncpg.InternalClientError,
    asyncpg.InterfaceError,
)


def database_unavailable(exc: BaseException, route: str) -> RpcError | None:
    """A lost database answers SERVICE_UNAVAILABLE (503: retry, maybe elsewhere); None for anything else."""
    if not is_connection_error(exc):
        return None
    log.warning("database unavailable", route=route, error=repr(exc))
    return RpcError("SERVICE_UNAVAILABLE", "The database is unavailable, try again later")


__all__ = [
    "CONNECTION_LOSS_TYPES",
    "RAW_TEXT_TYPE",
    "DatabaseUnavailable",
    "Pool",
    "ServiceConnection",
    "create_pool",
    "database_unavailable",
    "init_connection",
    "is_connection_error",
    "record_uuid_text",
    "redact",
    "with_database",
]
