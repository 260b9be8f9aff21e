"""booking.availability.check: available, or the reason and the remaining capacity."""

from __future__ import annotations

import datetime as dt
import uuid

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import (
    admin,
    call,
    call_err,
    expire_now,
    find_slots,
    generate_slots,
    hold_body,
    insert_booking,
    make_service,
    make_slot,
)


async def test_slot_reasons(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    open_slot = await make_slot(pool, cat.service_id, capacity=3)
    blocked = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=3), status="blocked")
    past = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(hours=-2))
    full = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=4))
    await insert_booking(pool, cat, full)

    async def check(slot: uuid.UUID, service: uuid.UUID = cat.service_id) -> tuple[bool, str | None, int]:
        r = await call(app_ctx, "booking.availability.check", {"service_id": str(service), "slot_id": str(slot)})
        return r.available, r.reason, r.remaining

    assert await check(open_slot) == (True, None, 3)
    await call(app_ctx, "booking.reservation.create", hold_body(cat, open_slot))
    assert await check(open_slot) == (True, None, 2)
    assert await check(blocked) == (False, "SLOT_BLOCKED", 0)
    assert await check(past) == (False, "SLOT_IN_PAST", 0)
    assert await check(full) == (False, "SLOT_FULL", 0)

    closed = await make_service(app_ctx, is_available=False)
    closed_slot = await make_slot(pool, closed.service_id)
    assert await check(closed_slot, closed.service_id) == (False, "SERVICE_NOT_BOOKABLE", 0)
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=6)).date()
    holiday = await make_service(
        app_ctx,
        availability_exceptions=[{"start_date": str(day - dt.timedelta(days=1)), "end_date": str(day)}],
    )
    h_slot = await make_slot(pool, holiday.service_id, starts_in=dt.timedelta(days=6))
    assert await check(h_slot, holiday.service_id) == (False, "AVAILABILITY_EXCEPTION", 0)

    err = await call_err(
        app_ctx,
        "booking.availability.check",
        {"service_id": str(cat.service_id), "slot_id": str(uuid.uuid4())},
    )
    assert (err.code, err.status_code) == ("NOT_FOUND", 404)
    err = await call_err(
        app_ctx,
        "booking.availability.check",
        {"service_id": str(closed.service_id), "slot_id": str(open_slot)},
    )
    assert err.code == "NOT_FOUND"  # the slot belongs to another service
    err = await call_err(app_ctx, "booking.availability.check", {"service_id": str(cat.service_id)})
    assert err.code == "VALIDATION_FAILED"


async def test_ttl_on_the_database_clock(app_ctx: Context, pool: Pool) -> None:
    """Scenario 2: before the TTL capacity-1, after it capacity again, with no expiry job."""
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=2)
    res = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    q = {"service_id": str(cat.service_id), "slot_id": str(slot)}
    assert (await call(app_ctx, "booking.availability.check", q)).remaining == 1
    await expire_now(pool, res.id)
    assert (await call(app_ctx, "booking.availability.check", q)).remaining == 2
    page = await find_slots(
        app_ctx,
        {"service_id": str(cat.service_id), "date_from": "2000-01-01", "date_to": "2100-01-01"},
    )
    assert [(s.remaining, s.booked_count) for s in page.items] == [(2, 0)]


async def test_by_date(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    await generate_slots(app_ctx, cat, "2030-02-01", "2030-02-01", "09:00", "10:00", capacity=2)
    q = {"service_id": str(cat.service_id), "date": "2030-02-01"}
    r = await call(app_ctx, "booking.availability.check", q)
    assert (r.available, r.reason, r.remaining, len(r.slots or [])) == (True, None, 4, 2)
    for s in r.slots or []:
        await call(app_ctx, "booking.slots.block", {"actor": admin(), "slot_id": str(s.slot_id)})
    r = await call(app_ctx, "booking.availability.check", q)
    assert (r.available, r.reason, r.remaining) == (False, "SLOT_BLOCKED", 0)
    empty = await call(app_ctx, "booking.availability.check", {**q, "date": "2030-02-02"})
    assert (empty.available, empty.reason, empty.slots) == (False, "SLOT_FULL", [])
    err = await call_err(app_ctx, "booking.availability.check", {**q, "service_id": str(uuid.uuid4())})
    assert err.code == "NOT_FOUND"
