"""Request deadlines over real sockets and a real PostgreSQL: TIMEOUT in time, the query cancelled, and a
wait for a pool connection answered SERVICE_UNAVAILABLE before the deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from booking_rpc.app import map_database_errors
from booking_rpc.client import Client, RemoteError
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries
from booking_rpc.deadline import current_deadline, deadline_middleware, requested_timeout
from booking_rpc.router import Call, Router
from tests.fixtures.server import MakeServer
from tests.helpers import wait_for


def sleeper_router(default_timeout: float, release: asyncio.Event | None = None) -> Router:
    """Test routes; `test.hold_connection` keeps its connection until `release` is set (when given)."""
    router = map_database_errors(Router())

    @router.message("test.pg_sleep")
    async def pg_sleep(payload: Any, ctx: Context) -> Any:
        async with ctx.transaction() as conn:
            return await conn.fetchval("SELECT pg_sleep($1::float8)::text", float(payload))

    @router.message("test.hold_connection")
    async def hold_connection(payload: Any, ctx: Context) -> str:
        async with ctx.connection():
            if release is not None:
                await release.wait()
            else:
                await asyncio.sleep(float(payload))
        return "held"

    @router.message("test.deadline")
    async def deadline_left(payload: Any, ctx: Context) -> float:
        deadline = current_deadline.get()
        assert deadline is not None
        return deadline - asyncio.get_running_loop().time()

    @router.message("test.ping", eager=True)
    async def ping(payload: Any, ctx: Context) -> str:
        return "pong"

    router.use(deadline_middleware(default_timeout))
    return router


@pytest.fixture
async def small_ctx(db_url: str, app_ctx: Context) -> Any:
    # an acquire timeout far from both the default deadline (5 s) and a caller's short one (0.1 s), so which
    # of them ended a wait shows in how long it took, however loaded the machine is
    pool = Pool(db_url, min_size=1, max_size=1, acquire_timeout=1.0)
    await pool.open()
    try:
        yield Context(pool=pool, sql=Queries.load(), settings=app_ctx.settings)
    finally:
        await pool.close()


async def error_of(client: Client, pattern: str, data: Any, **options: Any) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        await client.send(pattern, data, **options)
    return caught.value.err, time.monotonic() - started


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"timeout": "250"}, 0.25),
        ({"Timeout": 1500}, 1.5),
        ({"timeout": "0"}, None),
        ({"timeout": "-5"}, None),
        ({"timeout": "soon"}, None),
        ({"timeout": "nan"}, None),
        ({"timeout": True}, None),
        ({}, None),
        (None, None),
    ],
)
def test_requested_timeout_reads_milliseconds_from_metadata(metadata: Any, expected: float | None) -> None:
    assert requested_timeout(Call("tcp", metadata)) == expected


async def test_out_of_time_is_timeout_504_and_the_query_is_cancelled(
    app_ctx: Context, make_server: MakeServer, db_url: str
) -> None:
    server = await make_server(sleeper_router(0.4), app_ctx)
    async with await Client.connect("127.0.0.1", server.port) as client:
        err, took = await error_of(client, "test.pg_sleep", 30)
        assert err["code"] == "TIMEOUT" and err["statusCode"] == 504 and err["status"] == "error"
        assert 0.35 < took < 1.5
        # the connection was terminated, and PostgreSQL stops the backend's sleep when it notices
        watcher = await asyncpg.connect(db_url)
        try:
            async with asyncio.timeout(5):
                while await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'"
                ):
                    await asyncio.sleep(0.1)
        finally:
            await watcher.close()
        # and the service goes on: the pool opens a fresh connection
        assert await client.send("test.pg_sleep", 0) == ""


async def test_the_caller_may_ask_for_less_but_not_more(app_ctx: Context, make_server: MakeServer) -> None:
    server = await make_server(sleeper_router(5.0), app_ctx)
    async with await Client.connect("127.0.0.1", server.port) as client:
        err, took = await error_of(client, "test.pg_sleep", 30, metadata={"timeout": "200"})
        assert err["code"] == "TIMEOUT" and err["details"] == {"timeout_ms": 200}
        assert took < 1.0
        assert 4.0 < await client.send("test.deadline", None, metadata={"timeout": "60000"}) <= 5.0
        assert 0.0 < await client.send("test.deadline", None, metadata={"timeout": "300"}) <= 0.3
        # eager routes pass straight on (they run outside a Task)
        assert await client.send("test.ping", None) == "pong"


async def test_waiting_for_a_pool_connection_is_503_before_the_deadline(
    small_ctx: Context, make_server: MakeServer
) -> None:
    release = asyncio.Event()
    server = await make_server(sleeper_router(5.0, release), small_ctx)
    async with await Client.connect("127.0.0.1", server.port) as client:
        holder = asyncio.create_task(client.send("test.hold_connection", None, timeout=30))
        await wait_for(lambda: small_ctx.pool.get_idle_size() == 0, timeout=10)  # the holder has the one connection
        # the pool's acquire timeout (1 s) comes first, well before the 5 s deadline
        err, took = await error_of(client, "test.pg_sleep", 0)
        assert err["code"] == "SERVICE_UNAVAILABLE" and err["statusCode"] == 503
        assert 0.95 < took < 4.0
        # a shorter deadline comes first: still 503, before the caller's 100 ms grow into the 1 s acquire timeout
        err, took = await error_of(client, "test.pg_sleep", 0, metadata={"timeout": "100"})
        assert err["code"] == "SERVICE_UNAVAILABLE"
        assert took < 0.9
        assert not holder.done()
        release.set()
        assert await holder == "held"
        assert await client.send("test.pg_sleep", 0) == ""
    assert small_ctx.pool.timeouts == 2


async def test_concurrent_requests_each_time_out_by_their_own_deadline(
    app_ctx: Context, make_server: MakeServer
) -> None:
    server = await make_server(sleeper_router(0.6), app_ctx)
    async with await Client.connect("127.0.0.1", server.port) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed_out_after(delay: float) -> float:
            await asyncio.sleep(delay)
            err, _ = await error_of(client, "test.pg_sleep", 30)
            assert err["code"] == "TIMEOUT"
            return loop.time() - started

        async def quick(delay: float) -> str:
            await asyncio.sleep(delay)
            return str(await client.send("test.pg_sleep", 0.05))

        # two slow requests 0.3 s apart (the second's deadline is the queue's next once the first's fired),
        # one with a caller's shorter timeout between them, and quick ones finishing before and after each
        slow = [asyncio.create_task(timed_out_after(d)) for d in (0.0, 0.3)]
        short = asyncio.create_task(
            error_of(client, "test.pg_sleep", 30, metadata={"timeout": "150"}),
        )
        quick_ones = await asyncio.gather(*(quick(i * 0.05) for i in range(24)))
        first, second = await asyncio.gather(*slow)
        err, took = await short
    assert quick_ones == [""] * 24  # none cancelled by a neighbour's deadline
    assert err["code"] == "TIMEOUT" and err["details"] == {"timeout_ms": 150} and took < first
    assert 0.55 < first < 3.0 and second - first > 0.2  # each at its own deadline, not the first's
