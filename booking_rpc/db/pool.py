"""The asyncpg pool: codecs set once per connection, and how connection loss is recognised."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from booking_rpc import jsonutil


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


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs for one connection: json/jsonb <-> Python objects via orjson.

    asyncpg already gives numeric as Decimal, uuid as UUID and timestamptz as aware UTC datetimes; only
    JSON needs a codec (asyncpg's default hands JSON over as text).
    """
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=_encode_json, decoder=_decode_json, schema="pg_catalog", format="text"
        )


async def _skip_session_reset(conn: asyncpg.Connection) -> None:
    """Replace asyncpg's per-release reset query (RESET ALL; UNLISTEN *; ...): one round trip per request.

    Safe because no handler leaves session state behind: SET LOCAL and transaction-scoped advisory locks
    only, and LISTEN lives on dedicated connections outside the pool. asyncpg still rolls back an open
    transaction before calling this.
    """


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Open the pool; raise DatabaseUnavailable when the server cannot be reached."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            statement_cache_size=1024,
            reset=_skip_session_reset,
            # a connection idle this long is closed, so a restarted server is not met with stale sockets
            max_inactive_connection_lifetime=300.0,
        )
    except Exception as exc:
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
        return "closed" in text or ("connection" in text and "lost" in text)
    return False


__all__ = ["DatabaseUnavailable", "create_pool", "init_connection", "is_connection_error", "redact"]
