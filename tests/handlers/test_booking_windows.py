"""Booking windows per service: minimum notice and horizon enforced by the hold itself (database clock),
reported by availability.check and honoured by slots.find's only_available, in the clinic's zone."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from tests.helpers import (
    Catalog,
    assert_invariant,
    call,
    call_err,
    fetchrow,
    find_slots,
    hold,
    make_service,
    make_slot,
    staff,
    user_actor,
)


async def insert_local_slot(pool: Pool, cat: Catalog, starts_at: dt.datetime, slot_date: dt.date) -> uuid.UUID:
    """A slot whose clinic-local date is `slot_date` (make_slot writes UTC dates)."""
    async with pool.acquire() as conn:
        slot_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at)
               VALUES ($1, $2, '10:00', '10:30', $3::timestamptz, $3::timestamptz + interval '30 minutes') RETURNING id""",
            cat.service_id,
            slot_date,
            starts_at,
        )
    return slot_id


async def refused_hold(ctx: Context, cat: Catalog, slot_id: uuid.UUID) -> RpcError:
    user = uuid.uuid4()
    body = {"actor": user_actor(user), "user_id": str(user), "pet_id": str(uuid.uuid4())}
    return await call_err(
        ctx, "booking.reservation.create", {**body, "service_id": str(cat.service_id), "slot_id": str(slot_id)}
    )


def check_body(cat: Catalog, **what: Any) -> dict[str, Any]:
    return {"service_id": str(cat.service_id), **{k: str(v) for k, v in what.items()}}


async def test_upsert_sets_and_returns_the_window(app_ctx: Context) -> None:
    clinic = uuid.uuid4()
    body = {"actor": staff(clinic), "clinic_id": str(clinic), "name": "Dental", "price": "10.00"}
    svc = await call(
        app_ctx,
        "booking.services.upsert",
        {**body, "min_notice_minutes": 90, "max_advance_days": 14, "cancel_cutoff_hours": 12},
    )
    assert (svc.min_notice_minutes, svc.max_advance_days, svc.cancel_cutoff_hours) == (90, 14, 12)
    again = await call(app_ctx, "booking.services.upsert", {**body, "id": str(svc.id)})
    assert (again.min_notice_minutes, again.max_advance_days, again.cancel_cutoff_hours) == (0, None, 0)
    err = await call_err(app_ctx, "booking.services.upsert", {**body, "min_notice_minutes": -1})
    assert err.code == "VALIDATION_FAILED"


async def test_minimum_notice_refuses_a_hold_and_says_why(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, min_notice_minutes=120)
    soon = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(minutes=90))
    later = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(hours=3))
    err = await refused_hold(app_ctx, cat, soon)
    assert (err.code, err.status_code) == ("TOO_SOON", 409)
    row = await fetchrow(pool, "SELECT booked_count FROM slots WHERE id = $1", soon)
    assert row["booked_count"] == 0
    reply = await call(app_ctx, "booking.availability.check", check_body(cat, slot_id=soon))
    assert (reply.available, reply.reason, reply.remaining) == (False, "TOO_SOON", 0)
    assert (await hold(app_ctx, cat, later, uuid.uuid4())).status == "pending"
    await assert_invariant(pool)


async def test_horizon_refuses_far_slots_in_hold_check_and_find(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, max_advance_days=3)
    near = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=2))
    far = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=5))
    err = await refused_hold(app_ctx, cat, far)
    assert err.code == "TOO_FAR_AHEAD"
    far_row = await fetchrow(pool, "SELECT slot_date FROM slots WHERE id = $1", far)
    by_date = await call(app_ctx, "booking.availability.check", check_body(cat, date=far_row["slot_date"]))
    assert (by_date.available, by_date.reason) == (False, "TOO_FAR_AHEAD")
    assert [s.reason for s in by_date.slots] == ["TOO_FAR_AHEAD"]
    today = dt.date.today()
    find = {"service_id": str(cat.service_id), "date_from": str(today), "date_to": str(today + dt.timedelta(days=7))}
    everything = await find_slots(app_ctx, find)
    bookable = await find_slots(app_ctx, {**find, "only_available": True})
    assert {near, far} == {s.id for s in everything.items}
    assert [s.id for s in bookable.items] == [near]
    assert (await hold(app_ctx, cat, near, uuid.uuid4())).status == "pending"


async def test_horizon_counts_days_in_the_clinics_zone(app_ctx: Context, pool: Pool) -> None:
    # Kiritimati is UTC+14 and Pago Pago UTC-11: their "today" is a day apart for most of each UTC day.
    async with pool.acquire() as conn:
        db_now: dt.datetime = await conn.fetchval("SELECT now()")
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        clinic = uuid.uuid4()
        await call(
            app_ctx,
            "clinic.updated",
            {"clinic_id": str(clinic), "name": zone, "timezone": zone, "updated_at": db_now.isoformat()},
        )
        cat = await make_service(app_ctx, clinic_id=clinic, max_advance_days=0)
        local_today = db_now.astimezone(ZoneInfo(zone)).date()
        starts = db_now + dt.timedelta(hours=1)
        today_slot = await insert_local_slot(pool, cat, starts, local_today)
        tomorrow_slot = await insert_local_slot(
            pool, cat, starts + dt.timedelta(hours=1), local_today + dt.timedelta(1)
        )
        ok = await call(app_ctx, "booking.availability.check", check_body(cat, slot_id=today_slot))
        no = await call(app_ctx, "booking.availability.check", check_body(cat, slot_id=tomorrow_slot))
        assert (ok.available, no.reason) == (True, "TOO_FAR_AHEAD"), zone
        assert (await hold(app_ctx, cat, today_slot, uuid.uuid4())).status == "pending"


async def test_service_updated_may_carry_the_window(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, min_notice_minutes=30, max_advance_days=10, cancel_cutoff_hours=6)
    base = {
        "service_id": str(cat.service_id),
        "clinic_id": str(cat.clinic_id),
        "name": "Vaccination",
        "price": "150000.00",
        "duration_minutes": 30,
    }
    await call(app_ctx, "service.updated", {**base, "updated_at": "2099-01-01T00:00:00Z"})
    row = await fetchrow(
        pool,
        "SELECT min_notice_minutes, max_advance_days, cancel_cutoff_hours FROM services WHERE id = $1",
        cat.service_id,
    )
    assert tuple(row) == (30, 10, 6)  # not carried: kept
    await call(
        app_ctx,
        "service.updated",
        {**base, "updated_at": "2099-01-02T00:00:00Z", "min_notice_minutes": 0, "max_advance_days": 2},
    )
    row = await fetchrow(
        pool,
        "SELECT min_notice_minutes, max_advance_days, cancel_cutoff_hours FROM services WHERE id = $1",
        cat.service_id,
    )
    assert tuple(row) == (0, 2, 6)
