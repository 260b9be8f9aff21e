"""Consumed events over a real socket: caches follow newer data only; future snapshots follow, past don't."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from booking_rpc.client import Client
from booking_rpc.context import Context
from booking_rpc.server.server import Server
from tests.fixtures.app import serving
from tests.helpers import wait_for


async def eventually(conn: asyncpg.Connection, query: str, *args: Any, expect: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await conn.fetchval(query, *args)
        if value == expect:
            return
        if loop.time() > end:
            raise AssertionError(f"{query!r} gave {value!r}, expected {expect!r}")
        await asyncio.sleep(0.02)


async def settle(client: Client) -> None:
    # events have no reply: a request sent after them on the same connection is answered after they started,
    # and a short pause lets their transactions commit
    await client.send("ping", {})
    await asyncio.sleep(0.2)


async def booking_at(conn: asyncpg.Connection, pet: uuid.UUID, service: uuid.UUID, when: str) -> uuid.UUID:
    slot = await conn.fetchval(
        "INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at, booked_count)"
        f" VALUES ($1, '{when[:10]}', '10:00', '10:30', '{when}', timestamptz '{when}' + interval '30 min', 1)"
        " RETURNING id",
        service,
    )
    booking: uuid.UUID = await conn.fetchval(
        "INSERT INTO bookings (user_id, pet_id, clinic_id, service_id, slot_id, reference_code, amount,"
        " pet_snapshot, service_snapshot, booking_time) VALUES ($1, $2, $3, $4, $5, $6, 100, $7, $8, $9)"
        " RETURNING id",
        uuid.uuid4(),
        pet,
        uuid.uuid4(),
        service,
        slot,
        uuid.uuid4().hex[:10].upper(),
        {"id": str(pet), "name": "Old", "species": "cat", "breed": None},
        {
            "id": str(service),
            "name": "Old service",
            "price": "100.00",
            "duration_minutes": 30,
            "clinic_id": None,
            "clinic_name": None,
        },
        dt.datetime.fromisoformat(when),
    )
    return booking


async def test_pet_updated_refreshes_future_bookings_only(app_ctx: Context, app_client: Client) -> None:
    pet = uuid.uuid4()
    async with app_ctx.transaction() as conn:
        service = await conn.fetchval(
            "INSERT INTO services (clinic_id, name, price) VALUES ($1, 'Old service', 100) RETURNING id", uuid.uuid4()
        )
        future = await booking_at(conn, pet, service, "2035-01-01T10:00:00+00:00")
        past = await booking_at(conn, pet, service, "2020-01-01T10:00:00+00:00")
    await app_client.emit(
        "pet.updated",
        {
            "event_type": "pet.updated",
            "pet_id": str(pet),
            "name": "Mochi",
            "species": "cat",
            "breed": "Ragdoll",
            "updated_at": "2026-11-01T00:00:00Z",
        },
    )
    await settle(app_client)
    async with app_ctx.connection() as conn:
        await eventually(conn, "SELECT name FROM pets WHERE id = $1", pet, expect="Mochi")
        assert (await conn.fetchval("SELECT pet_snapshot FROM bookings WHERE id = $1", future))["name"] == "Mochi"
        assert (await conn.fetchval("SELECT pet_snapshot FROM bookings WHERE id = $1", past))["name"] == "Old"


async def test_older_update_is_ignored(app_ctx: Context, app_client: Client) -> None:
    user = str(uuid.uuid4())
    newer = {"user_id": user, "email": "new@example.com", "full_name": "N", "updated_at": "2026-11-02T00:00:00Z"}
    older = {"user_id": user, "email": "old@example.com", "full_name": "O", "updated_at": "2026-11-01T00:00:00Z"}
    await app_client.emit("user.updated", newer)
    await settle(app_client)
    await app_client.emit("user.updated", older)
    await app_client.emit("user.updated", newer)  # a replay: idempotent
    await settle(app_client)
    async with app_ctx.connection() as conn:
        await eventually(conn, "SELECT email FROM users WHERE id = $1", uuid.UUID(user), expect="new@example.com")
        assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_service_and_clinic_updates(app_ctx: Context, app_client: Client) -> None:
    clinic, service = uuid.uuid4(), uuid.uuid4()
    await app_client.emit(
        "clinic.updated",
        {
            "clinic_id": str(clinic),
            "name": "Happy Paws",
            "address": "Jl. Kucing 1",
            "phone_number": "+62",
            "timezone": "Asia/Jakarta",
            "updated_at": "2026-11-01T00:00:00Z",
        },
    )
    await app_client.emit(
        "service.updated",
        {
            "service_id": str(service),
            "clinic_id": str(clinic),
            "name": "Grooming",
            "price": "250000.00",
            "duration_minutes": 60,
            "is_available": True,
            "updated_at": "2026-11-01T00:00:00Z",
        },
    )
    await settle(app_client)
    async with app_ctx.connection() as conn:
        await eventually(conn, "SELECT timezone FROM clinics WHERE id = $1", clinic, expect="Asia/Jakarta")
        await eventually(conn, "SELECT price::text FROM services WHERE id = $1", service, expect="250000.00")


async def test_malformed_event_changes_nothing_and_is_counted(
    app_ctx: Context, app_client: Client, app_server: Server
) -> None:
    await app_client.emit("pet.updated", {"pet_id": "not-a-uuid", "updated_at": "yesterday"})
    await app_client.emit("service.updated", {"service_id": str(uuid.uuid4())})
    await settle(app_client)
    assert app_server.stats.events_failed == 2
    async with app_ctx.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pets") == 0
        assert await conn.fetchval("SELECT count(*) FROM services") == 0


# --- an event outlives the connection that brought it ---------------------------------------------------


def user_update(user: uuid.UUID, email: str, updated_at: str = "2026-11-02T00:00:00Z") -> dict[str, Any]:
    return {"user_id": str(user), "email": email, "full_name": "N", "updated_at": updated_at}


@contextlib.asynccontextmanager
async def user_row_locked(db_url: str, user: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
    """The user's cache row (an old version) locked by a transaction of the test's own, until the block ends:
    an update of it waits meanwhile."""
    blocker = await asyncpg.connect(db_url)
    try:
        await blocker.execute(
            "INSERT INTO users (id, email, full_name, updated_at) VALUES ($1, 'old@example.com', 'O', '2020-01-01')",
            user,
        )
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user)
            yield blocker
    finally:
        await blocker.close()


async def blocked_by(blocker: asyncpg.Connection) -> bool:
    """Some backend waits for a lock the blocker holds (the event's handler, mid-statement)."""
    waiting = await blocker.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", blocker.get_server_pid()
    )
    return bool(waiting)


async def emitted_then_closed(server: Server, pattern: str, payloads: list[dict[str, Any]]) -> None:
    """Emit over a fresh connection and close it at once; return once the server has seen it close."""
    client = await Client.connect("127.0.0.1", server.port)
    for payload in payloads:
        await client.emit(pattern, payload)
    await client.close()
    await wait_for(lambda: server.stats.connections_open == 0, timeout=10)


async def test_events_emitted_then_closed_at_once_are_all_applied(app_ctx: Context, app_server: Server) -> None:
    users = [uuid.uuid4() for _ in range(20)]
    await emitted_then_closed(app_server, "user.updated", [user_update(u, f"{u}@example.com") for u in users])

    async def applied() -> bool:
        async with app_ctx.connection() as conn:
            return bool(await conn.fetchval("SELECT count(*) FROM users WHERE id = ANY($1)", users) == len(users))

    await wait_for(applied, timeout=15)
    assert app_server.stats.events_failed == 0


async def test_an_event_handler_mid_statement_finishes_after_its_connection_closed(
    app_ctx: Context, app_server: Server, db_url: str
) -> None:
    user = uuid.uuid4()
    async with user_row_locked(db_url, user) as blocker:
        await emitted_then_closed(app_server, "user.updated", [user_update(user, "new@example.com")])
        # the handler's upsert waits on our lock with its connection gone: it is not cancelled
        await wait_for(lambda: blocked_by(blocker), timeout=15)
    async with app_ctx.connection() as conn:
        await eventually(conn, "SELECT email FROM users WHERE id = $1", user, expect="new@example.com", timeout=15)
    assert app_server.stats.events_failed == 0


async def test_a_graceful_shutdown_waits_for_events_in_flight(app_ctx: Context, db_url: str) -> None:
    user = uuid.uuid4()
    async with serving(app_ctx) as server:
        async with user_row_locked(db_url, user) as blocker:
            await emitted_then_closed(server, "user.updated", [user_update(user, "new@example.com")])
            await wait_for(lambda: blocked_by(blocker), timeout=15)
            stopping = asyncio.create_task(server.shutdown(30.0))
            await asyncio.sleep(0.3)
            assert not stopping.done()  # the event's connection is gone, yet shutdown waits for it
            assert server.in_flight() == 1
        await asyncio.wait_for(stopping, 15)
    async with app_ctx.connection() as conn:
        assert await conn.fetchval("SELECT email FROM users WHERE id = $1", user) == "new@example.com"
