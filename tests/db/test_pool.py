"""The pool's codecs, and how an unreachable or lost database is recognised."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from booking_rpc.db.pool import DatabaseUnavailable, create_pool, is_connection_error, redact
from tests.fixtures.db import with_database


async def test_json_numeric_uuid_timestamptz_codecs(pool: asyncpg.Pool) -> None:
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


async def test_jsonb_column_round_trip(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO services (clinic_id, name, price, availability_exceptions) VALUES ($1, 'x', 1, $2)",
            uuid.uuid4(),
            [{"date": dt.date(2030, 1, 1), "closed": True}],
        )
        stored = await conn.fetchval("SELECT availability_exceptions FROM services")
    assert stored == [{"date": "2030-01-01", "closed": True}]


async def test_lost_connection_is_a_connection_error(pool: asyncpg.Pool) -> None:
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


async def test_query_errors_are_not_connection_errors(pool: asyncpg.Pool) -> None:
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
