"""The pool: its codecs, how an unreachable or lost database is recognised, and how it lends connections."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from booking_rpc.db.pool import (
    RAW_TEXT_TYPE,
    DatabaseUnavailable,
    Pool,
    ServiceConnection,
    create_pool,
    is_connection_error,
    redact,
    with_database,
)
from booking_rpc.deadline import current_deadline


async def test_json_numeric_uuid_timestamptz_codecs(pool: Pool) -> None:
    value = {"a": 1, "nested": {"list": [1, "x", None]}, "price": Decimal("12.50"), "ü": "ß"}
    assert await pool.fetchval("SELECT $1::jsonb", value) == {
        "a": 1,
        "nested": {"list": [1, "x", None]},
        "price": "12.50",  # money stays exact: jsonutil writes Decimal as a string
        "ü": "ß",
    }
    assert await pool.fetchval("SELECT $1::json", [1, 2]) == [1, 2]
    assert await pool.fetchval("""SELECT '{"k": [true]}'::jsonb""") == {"k": [True]}

    number = await pool.fetchval("SELECT 12.50::numeric(12,2)")
    assert isinstance(number, Decimal)
    assert number == Decimal("12.50")
    assert str(number) == "12.50"

    ident = uuid.uuid4()
    assert await pool.fetchval("SELECT $1::uuid", ident) == ident

    when = await pool.fetchval("SELECT '2025-03-30 01:30:00+01'::timestamptz")
    assert when.tzinfo is not None
    assert when == dt.datetime(2025, 3, 30, 0, 30, tzinfo=dt.UTC)


async def test_raw_text_comes_back_as_its_utf8_bytes_and_text_stays_str(pool: Pool) -> None:
    """A value cast to RAW_TEXT_TYPE (slots.find's page) is handed over as the bytes PostgreSQL sent."""
    assert await pool.fetchval(f"SELECT '[{{\"ü\":1}}]'::text::{RAW_TEXT_TYPE}") == '[{"ü":1}]'.encode()
    assert await pool.fetchval(f"SELECT $1::{RAW_TEXT_TYPE}", "a b") == b"a b"
    assert await pool.fetchval("SELECT 'x'::text") == "x"
    assert await pool.fetchval("SELECT 'x'::varchar(5)") == "x"


async def test_no_column_of_the_schema_has_the_raw_text_type(pool: Pool) -> None:
    """Only a statement's own cast may give bytes: a column of that type would reach handlers as bytes."""
    columns = await pool.fetchval(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.atttypid = $1::regtype",
        RAW_TEXT_TYPE,
    )
    assert columns == 0


async def test_jsonb_column_round_trip(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO services (clinic_id, name, price, availability_exceptions) VALUES ($1, 'x', 1, $2)",
            uuid.uuid4(),
            [{"date": dt.date(2030, 1, 1), "closed": True}],
        )
        stored = await conn.fetchval("SELECT availability_exceptions FROM services")
    assert stored == [{"date": "2030-01-01", "closed": True}]


async def test_lost_connection_is_a_connection_error(pool: Pool) -> None:
    async with pool.acquire() as victim, pool.acquire() as killer:
        pid = victim.get_server_pid()
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Exception) as info:
            for _ in range(50):  # the termination reaches the victim's socket asynchronously
                await victim.fetchval("SELECT 1")
                await asyncio.sleep(0.02)
        assert is_connection_error(info.value), repr(info.value)
    # the pool replaces the dead connection
    assert await pool.fetchval("SELECT 1") == 1


async def test_query_errors_are_not_connection_errors(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError) as syntax:
            await conn.execute("SELEC 1")
        await conn.execute("SET statement_timeout = '10ms'")
        with pytest.raises(asyncpg.QueryCanceledError) as cancelled:
            await conn.execute("SELECT pg_sleep(1)")
        await conn.execute("RESET statement_timeout")
    assert not is_connection_error(syntax.value)
    assert not is_connection_error(cancelled.value)
    assert not is_connection_error(ValueError("x"))
    assert is_connection_error(ConnectionRefusedError())
    assert is_connection_error(TimeoutError())


async def test_a_prepared_fetchrow_goes_straight_to_the_protocol_as_asyncpg_would_run_it(db_url: str) -> None:
    """ServiceConnection.fetchrow of a statement it has run before skips asyncpg's layers, not what they do:
    the same rows and errors, command_timeout, a statement a schema change made stale prepared anew (and
    refused inside a transaction, as asyncpg refuses it), and a cancel that leaves no half-used connection."""
    pool = await create_pool(db_url, min_size=1, max_size=1, command_timeout=0.3)
    try:
        async with pool.acquire() as conn:
            assert isinstance(conn, ServiceConnection)
            await conn.execute("CREATE TABLE t (a int PRIMARY KEY)")
            insert, read = "INSERT INTO t VALUES ($1) RETURNING a", "SELECT * FROM t WHERE a = $1"
            assert (await conn.fetchrow(insert, 1))["a"] == 1
            assert insert in conn._prepared  # the next one takes the short way
            assert (await conn.fetchrow(insert, 2))["a"] == 2
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.fetchrow(insert, 2)
            with pytest.raises(asyncpg.DataError):
                await conn.fetchrow(insert, 2**40)
            assert await conn.fetchrow(read, 1) == await conn.fetchrow(read, 1) and read in conn._prepared
            assert await conn.fetchrow(read, 3) is None
            await conn.execute("ALTER TABLE t ADD COLUMN b int DEFAULT 7")
            async with conn.transaction():
                with pytest.raises(asyncpg.InvalidCachedStatementError):
                    await conn.fetchrow(read, 1)
            assert dict(await conn.fetchrow(read, 1)) == {"a": 1, "b": 7}  # prepared anew, outside a transaction
            assert dict(await conn.fetchrow(read, 1)) == {"a": 1, "b": 7} and read in conn._prepared
            sleep = "SELECT pg_sleep($1)::text"
            await conn.fetchrow(sleep, 0.0)
            with pytest.raises(TimeoutError):  # command_timeout bounds it as before
                await conn.fetchrow(sleep, 1.0)

        async def slow() -> None:
            async with pool.acquire() as conn:
                await conn.fetchrow(sleep, 0.0)
                await conn.fetchrow(sleep, 0.25)

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.get_size() == 0  # cancelled mid-query: terminated
        async with pool.acquire() as conn:
            assert (await conn.fetchrow("SELECT count(*) FROM t"))[0] == 2
    finally:
        await pool.close()


async def test_a_cancelled_prepared_fetchrow_leaves_its_connection_usable(db_url: str) -> None:
    """Outside the pool (which terminates a connection cancelled mid-query): the fast path's cancel leaves the
    protocol and asyncpg's one-operation section as asyncpg's own fetchrow leaves them, so the connection
    runs the next statements, fast path and asyncpg's both."""
    conn = await asyncpg.connect(db_url, connection_class=ServiceConnection)
    try:
        sleep = "SELECT pg_sleep($1)::text"
        await conn.fetchrow(sleep, 0.0)
        assert sleep in conn._prepared  # the next one takes the short way
        task = asyncio.create_task(conn.fetchrow(sleep, 5.0))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await conn.fetchrow(sleep, 0.0))[0] == ""
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_server_raises_database_unavailable() -> None:
    port = free_port()
    with pytest.raises(DatabaseUnavailable) as info:
        await create_pool(f"postgresql://booker:s3cret@127.0.0.1:{port}/bookings")
    message = str(info.value)
    assert f"host=127.0.0.1 port={port} database=bookings" in message
    assert "s3cret" not in message


async def test_a_server_that_never_answers_is_given_up_on_in_time() -> None:
    # accepts the connection and says nothing: a frozen or partitioned database
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await create_pool(f"postgresql://booker@127.0.0.1:{port}/bookings", connect_timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        pool = Pool(f"postgresql://booker@127.0.0.1:{port}/bookings", min_size=0, max_size=2, connect_timeout=5.0)
        # inside a request the deadline bounds the connect, whatever connect_timeout says
        token = current_deadline.set(asyncio.get_running_loop().time() + 0.2)
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError) as info:
                await pool.acquire()
            assert time.monotonic() - started < 0.5
            assert is_connection_error(info.value)
            assert pool.get_size() == 0 and pool.timeouts == 1
        finally:
            current_deadline.reset(token)
    finally:
        silent.close()


async def test_command_timeout_bounds_each_statement_unless_the_request_deadline_comes_first(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1, command_timeout=0.3)
    loop = asyncio.get_running_loop()
    try:
        # outside a request (jobs, the relay): asyncpg's command_timeout ends a statement that runs too long
        async with pool.acquire() as conn:
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT pg_sleep(1)")
        # a request whose deadline is further off than command_timeout: command_timeout still ends it
        token = current_deadline.set(loop.time() + 5.0)
        try:
            conn = await pool.acquire()
            try:
                with pytest.raises(TimeoutError):
                    await conn.fetchval("SELECT pg_sleep(1)")
            finally:
                pool.release_now(conn, unusable=True)
        finally:
            current_deadline.reset(token)
        # a request whose deadline comes first: the deadline middleware cancels the request then, so the
        # statement runs without asyncpg's own timer (nothing cancels it here: it finishes past 0.3 s)
        token = current_deadline.set(loop.time() + 0.25)
        try:
            async with pool.acquire() as conn:
                started = time.monotonic()
                assert await conn.fetchval("SELECT pg_sleep(0.5)::text") == ""
                assert time.monotonic() - started >= 0.45
        finally:
            current_deadline.reset(token)
        # and the same connection, lent outside a request again, has its command_timeout back
        async with pool.acquire() as again:
            assert again is conn
            with pytest.raises(TimeoutError):
                await again.fetchval("SELECT pg_sleep(1)")
    finally:
        await pool.close()


async def test_missing_database_raises_database_unavailable(pg_base_dsn: str) -> None:
    dsn = with_database(pg_base_dsn, "booking_rpc_missing_" + uuid.uuid4().hex[:8])
    with pytest.raises(DatabaseUnavailable, match="booking_rpc_missing_"):
        await create_pool(dsn)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://postgres:@/booking_rpc?host=/tmp/x",
            "postgresql://postgres:***@/booking_rpc?host=/tmp/x",
        ),
    ],
)
def test_redact(dsn: str, expected: str) -> None:
    assert redact(dsn) == expected
    assert urlsplit(redact(dsn)).password in (None, "***")


# --- the pool itself -------------------------------------------------------------------------------------


async def test_at_most_max_size_and_waiters_served_in_order_the_relay_first(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        first, second = await pool.acquire(), await pool.acquire()
        assert (pool.get_size(), pool.get_idle_size()) == (2, 0)
        order: list[int] = []

        async def wait(n: int, *, first: bool = False) -> None:
            async with pool.acquire(first=first) as conn:
                order.append(n)
                assert await conn.fetchval("SELECT 1") == 1

        waiters = [asyncio.create_task(wait(n)) for n in range(3)]
        await asyncio.sleep(0.05)
        # the relay's batches wait at the head of the queue, not behind every request
        waiters.append(asyncio.create_task(wait(9, first=True)))
        await asyncio.sleep(0.05)
        assert order == [] and pool.get_size() == 2  # nobody opened a third connection
        await pool.release(first)
        await pool.release(second)
        await asyncio.gather(*waiters)
        assert order == [9, 0, 1, 2]
        assert (pool.get_size(), pool.get_idle_size()) == (2, 2)
        assert pool.waits == 4 and pool.wait_seconds >= 3 * 0.05
    finally:
        await pool.close()


async def test_a_cancelled_user_leaves_no_half_used_connection(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        started = asyncio.Event()

        async def slow() -> None:
            async with pool.acquire() as conn:
                started.set()
                await conn.execute("SELECT pg_sleep(10)")

        task = asyncio.create_task(slow())
        await started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the interrupted connection was terminated, not handed to the next user mid-query
        assert pool.get_size() == 0
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_a_cancelled_waiter_loses_nothing(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        held = await pool.acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.acquire()
        await pool.release(held)
        async with asyncio.timeout(2):
            async with pool.acquire() as conn:
                assert conn is held  # the connection came back to the pool, not to the gone waiter
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    finally:
        await pool.close()


async def test_left_in_a_transaction_or_idle_too_long_is_replaced(db_url: str) -> None:
    pool = Pool(db_url, min_size=1, max_size=2, max_idle=0.2)
    await pool.open()
    try:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await pool.release(conn)
        assert conn.is_closed() and pool.get_size() == 0
        again = await pool.acquire()
        assert again is not conn and not again.is_in_transaction()
        await pool.release(again)
        await asyncio.sleep(0.3)
        fresh = await pool.acquire()
        assert fresh is not again and again.is_closed()
        await pool.release(fresh)
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_closing_refuses_new_users_and_ends_returning_ones(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=2, max_size=2)
    in_use = await pool.acquire()
    await pool.close()
    assert pool.get_size() == 1
    with pytest.raises(asyncpg.InterfaceError, match="closing") as refused:
        await pool.acquire()
    assert is_connection_error(refused.value)  # a request then gets SERVICE_UNAVAILABLE (503), not INTERNAL
    await pool.release(in_use)
    assert in_use.is_closed() and pool.get_size() == 0


async def test_old_connections_retire_so_cached_plans_do_not_outlive_table_growth(db_url: str) -> None:
    pool = Pool(db_url, min_size=1, max_size=1, max_lifetime=0.2)
    await pool.open()
    try:
        async with pool.acquire() as first:
            pid = first.get_server_pid()
        async with pool.acquire() as conn:
            assert conn is first  # young: reused
        await asyncio.sleep(0.3)
        async with pool.acquire() as conn:
            assert conn is first  # the age is checked when a connection comes back...
        async with pool.acquire() as conn:
            assert conn is not first and conn.get_server_pid() != pid  # ...and then it is replaced
        assert pool.get_size() == 1
    finally:
        await pool.close()
    assert first.is_closed()


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:pw@h:5432/db?sslmode=require", "postgresql://u:pw@h:5432/other?sslmode=require"),
        # the embedded server's form: a socket folder in the query, which a split on "/" would cut
        ("postgresql://postgres:@/postgres?host=/tmp/pg/sock", "postgresql://postgres:@/other?host=/tmp/pg/sock"),
    ],
)
def test_with_database(dsn: str, expected: str) -> None:
    assert with_database(dsn, "other") == expected
