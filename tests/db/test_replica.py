"""Reads from a real streaming replica (pg_basebackup + hot standby), writes and capacity on the primary,
and the fallback to the primary when the replica lags or is down."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from pydantic import SecretStr

from booking_rpc.app import running_app
from booking_rpc.config import Settings
from booking_rpc.context import Context
from booking_rpc.db.replica import ReadReplica
from tests.fixtures.replica import Standby
from tests.helpers import admin, call, call_err, find_slots, hold, make_service, make_slot, wait_for


def read_settings(db_url: str, read_url: str, **fields: Any) -> Settings:
    """The service on the test's database, reading from `read_url`; no listeners of its own in the way."""
    return Settings(
        port=0,
        metrics_enabled=False,
        jobs_enabled=False,
        database_url=SecretStr(db_url),
        database_read_url=SecretStr(read_url),
        **fields,
    )


async def service_names(ctx: Context, clinic: uuid.UUID) -> list[str]:
    page = await call(ctx, "booking.services.find", {"actor": admin(), "clinic_id": str(clinic)})
    return sorted(s.name for s in page.items)


async def on_standby(standby_dsn: str, statement: str) -> Any:
    conn = await asyncpg.connect(standby_dsn)
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


async def test_reads_on_the_replica_writes_on_the_primary_fallback_when_behind_or_down(
    db_url: str, standby: Standby
) -> None:
    replica_dsn = await standby.ready_for(db_url)
    settings = read_settings(db_url, replica_dsn, read_max_lag=2.0, read_check_interval=0.1)
    async with running_app(settings, migrate_first=False) as app:
        ctx = app.ctx
        replica = ctx.replica
        assert isinstance(replica, ReadReplica)
        await wait_for(lambda: replica.state == "ok")
        cat = await make_service(ctx, name="First")  # a write: the primary
        await wait_for(lambda: service_names(ctx, cat.clinic_id), timeout=10)  # replicated, read back

        # replay paused: the replica stops changing, so what a read returns says where it ran
        assert await on_standby(replica_dsn, "SELECT pg_is_in_recovery()") is True
        await on_standby(replica_dsn, "SELECT pg_wal_replay_pause()")
        reads_before = replica.reads
        await make_service(ctx, name="Second", clinic_id=cat.clinic_id)  # the write still succeeds
        assert await service_names(ctx, cat.clinic_id) == ["First"]  # the read ran on the (stale) replica
        assert replica.reads == reads_before + 1

        # a hold on a slot the replica has never seen: capacity is decided on the primary
        slot = await make_slot(app.pool, cat.service_id, capacity=1)
        held = await hold(ctx, cat, slot, uuid.uuid4())
        assert held.slot_id == slot

        # behind by more than read_max_lag: reads fall back to the primary, which has everything
        await wait_for(lambda: replica.state == "lagging", timeout=10)
        fallbacks = replica.fallbacks
        assert await service_names(ctx, cat.clinic_id) == ["First", "Second"]
        assert replica.fallbacks == fallbacks + 1

        # replay resumed: the replica catches up and serves reads again
        await on_standby(replica_dsn, "SELECT pg_wal_replay_resume()")
        await wait_for(lambda: replica.state == "ok", timeout=10)
        reads_before = replica.reads
        assert await service_names(ctx, cat.clinic_id) == ["First", "Second"]
        assert replica.reads == reads_before + 1

        # the replica stopped: marked down within a check, reads answered by the primary
        await asyncio.to_thread(standby.stop)
        await wait_for(lambda: replica.state == "down", timeout=10)
        assert await service_names(ctx, cat.clinic_id) == ["First", "Second"]
        availability = await call(
            ctx,
            "booking.availability.check",
            {"actor": admin(), "service_id": str(cat.service_id), "slot_id": str(slot)},
        )
        assert availability.available is False  # held by the hold above: the primary's answer


async def test_every_read_pattern_uses_the_read_connection(db_url: str, standby: Standby) -> None:
    """With replay paused, a row written after the pause is invisible to each read pattern: they read the replica."""
    replica_dsn = await standby.ready_for(db_url)
    settings = read_settings(db_url, replica_dsn, read_max_lag=60.0, read_check_interval=0.1)
    async with running_app(settings, migrate_first=False) as app:
        ctx = app.ctx
        replica = ctx.replica
        assert isinstance(replica, ReadReplica)
        await wait_for(lambda: replica.state == "ok")
        await on_standby(replica_dsn, "SELECT pg_wal_replay_pause()")
        cat = await make_service(ctx)
        slot = await make_slot(app.pool, cat.service_id, capacity=2)
        await hold(ctx, cat, slot, uuid.uuid4())
        start = replica.reads
        page = await call(ctx, "booking.services.find", {"actor": admin(), "clinic_id": str(cat.clinic_id)})
        assert page.items == []
        found = await find_slots(
            ctx, {"service_id": str(cat.service_id), "date_from": "2000-01-01", "date_to": "2100-01-01"}
        )
        assert found.items == []
        # the slot exists on the primary only: availability read from the replica cannot find it
        missing = await call_err(
            ctx,
            "booking.availability.check",
            {"actor": admin(), "service_id": str(cat.service_id), "slot_id": str(slot)},
        )
        assert missing.code == "NOT_FOUND"
        for pattern, body in (
            ("booking.booking.find", {"actor": admin()}),
            ("booking.notifications.find", {"actor": admin(), "user_id": str(uuid.uuid4())}),
            ("booking.stats.completion_rates", {"actor": admin()}),
        ):
            await call(ctx, pattern, body)
        assert replica.reads - start == 6


async def test_a_read_url_that_is_no_standby_is_not_read(db_url: str) -> None:
    """Pointed at a primary (no replay position), the read pool is never used: reads stay on DATABASE_URL."""
    settings = read_settings(db_url, db_url, read_check_interval=0.1)
    async with running_app(settings, migrate_first=False) as app:
        replica = app.ctx.replica
        assert isinstance(replica, ReadReplica)
        assert (replica.state, replica.usable) == ("not_a_standby", False)
        cat = await make_service(app.ctx)
        assert await service_names(app.ctx, cat.clinic_id) == ["Vaccination"]
        assert (replica.reads, replica.fallbacks) == (0, 1)
