"""Builders for booking-lifecycle tests: catalogue, holds, bookings, actors, outbox checks."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from booking_rpc.models.bookings import BookingOut
from booking_rpc.models.events import PUBLISHED_EVENTS
from tests.fixtures.app import call

ENVELOPE = ("event_type", "event_id", "occurred_at")
EVENT_MODELS = {m.event_type: m for m in PUBLISHED_EVENTS}


async def call_err(ctx: Context, pattern: str, data: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await call(ctx, pattern, data)
    return info.value


def admin() -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "role": "admin"}


def user_actor(user_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(user_id), "role": "user"}


def staff(clinic_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(clinic_id)}


@dataclass
class Catalog:
    clinic_id: uuid.UUID
    service_id: uuid.UUID


async def make_service(ctx: Context, **fields: Any) -> Catalog:
    clinic = fields.pop("clinic_id", uuid.uuid4())
    body = {"actor": admin(), "clinic_id": str(clinic), "name": "Vaccination", "price": "150000.00", **fields}
    svc = await call(ctx, "booking.services.upsert", body)
    return Catalog(clinic_id=clinic, service_id=svc.id)


async def make_slot(
    pool: Pool,
    service_id: uuid.UUID,
    *,
    capacity: int = 1,
    starts_in: dt.timedelta = dt.timedelta(days=2),
) -> uuid.UUID:
    start = (dt.datetime.now(dt.UTC) + starts_in).replace(second=0, microsecond=0)
    end = start + dt.timedelta(minutes=30)
    if end.date() != start.date():
        start -= dt.timedelta(hours=1)
        end -= dt.timedelta(hours=1)
    async with pool.acquire() as conn:
        slot_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at, capacity)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            service_id,
            start.date(),
            start.time(),
            end.time(),
            start,
            end,
            capacity,
        )
    return slot_id


async def shift_slot(pool: Pool, slot_id: uuid.UUID, starts_in: dt.timedelta) -> None:
    """Move a slot's instants relative to the database clock (the local DATE/TIME stay as they are)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE slots SET starts_at = now() + $2::interval,
                                ends_at = now() + $2::interval + interval '30 minutes' WHERE id = $1""",
            slot_id,
            starts_in,
        )


async def hold(ctx: Context, cat: Catalog, slot: uuid.UUID, user: uuid.UUID, pet: uuid.UUID | None = None) -> Any:
    return await call(
        ctx,
        "booking.reservation.create",
        {
            "actor": user_actor(user),
            "user_id": str(user),
            "pet_id": str(pet or uuid.uuid4()),
            "service_id": str(cat.service_id),
            "slot_id": str(slot),
        },
    )


def confirm_body(res: Any, **extra: Any) -> dict[str, Any]:
    return {
        "actor": user_actor(res.user_id),
        "reservation_id": str(res.id),
        "lock_id": res.lock_id,
        "user_id": str(res.user_id),
        **extra,
    }


@dataclass
class Booked:
    cat: Catalog
    slot: uuid.UUID
    user: uuid.UUID
    booking: BookingOut


async def book(
    ctx: Context,
    pool: Pool,
    *,
    cat: Catalog | None = None,
    starts_in: dt.timedelta = dt.timedelta(days=3),
    capacity: int = 1,
    payment: dict[str, Any] | None = None,
    **service: Any,
) -> Booked:
    cat = cat or await make_service(ctx, **service)
    slot = await make_slot(pool, cat.service_id, capacity=capacity, starts_in=starts_in)
    user = uuid.uuid4()
    res = await hold(ctx, cat, slot, user)
    pay = (
        payment
        if payment is not None
        else {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"}
    )
    b = await call(ctx, "booking.reservation.confirm", confirm_body(res, payment=pay))
    return Booked(cat, slot, user, b)


async def set_status(ctx: Context, b: Booked, status: str) -> Any:
    return await call(
        ctx,
        "booking.booking.update",
        {"actor": staff(b.cat.clinic_id), "booking_id": str(b.booking.id), "status": status},
    )


async def outbox(pool: Pool, event_type: str | None = None) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM booking_events_outbox WHERE $1::text IS NULL OR event_type = $1 ORDER BY seq",
            event_type,
        )


INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def assert_models_own_json(rows: list[asyncpg.Record]) -> None:
    """Each payload (envelope aside) is its model's own JSON, whoever wrote it: SQL or Python; instants "...Z"."""
    for r in rows:
        payload = dict(r["payload"])
        assert INSTANT.fullmatch(payload["occurred_at"]), payload["occurred_at"]
        fields = {k: v for k, v in payload.items() if k not in ENVELOPE}
        model = EVENT_MODELS[r["event_type"]]
        assert model.model_validate(fields).model_dump(mode="json") == fields


async def validate_outbox(pool: Pool) -> int:
    """Every outbox payload is its event model's own JSON (the seed shape + envelope), whichever path wrote
    it (Python, a statement, the booking trigger); returns the row count."""
    rows = await outbox(pool)
    for r in rows:
        payload = dict(r["payload"])
        assert payload["event_type"] == r["event_type"]
        uuid.UUID(payload["event_id"])
    assert_models_own_json(rows)
    return len(rows)


INVARIANT_SQL = """
SELECT s.id, s.capacity, s.booked_count,
       (SELECT count(*) FROM reservations r WHERE r.slot_id = s.id AND r.status = 'pending')
     + (SELECT count(*) FROM bookings b WHERE b.slot_id = s.id
        AND b.status IN ('pending_approval', 'confirmed', 'in-progress', 'completed', 'no-show')) AS holders
FROM slots s
"""


async def assert_invariant(pool: Pool) -> None:
    """booked_count = pending holds + active bookings, within [0, capacity], for every slot."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(INVARIANT_SQL)
    for r in rows:
        assert r["booked_count"] == r["holders"], dict(r)
        assert 0 <= r["booked_count"] <= r["capacity"], dict(r)


async def fetch(pool: Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def fetchrow(pool: Pool, sql: str, *args: Any) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(sql, *args)
    assert row is not None
    return row
