"""The expiry job: SKIP LOCKED batches, capacity given back once, one reservation.expired per hold."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.jobs.expiry import expire_holds
from tests.helpers import (
    assert_invariant,
    assert_models_own_json,
    call,
    expire_now,
    hold_body,
    make_service,
    make_slot,
    outbox,
    slot_row,
)


async def test_job_expires_due_holds_once(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slots = [await make_slot(pool, cat.service_id, capacity=2, starts_in=dt.timedelta(days=d + 1)) for d in range(3)]
    holds = []
    for s in slots:
        for _ in range(2):
            holds.append(await call(app_ctx, "booking.reservation.create", hold_body(cat, s)))
    due = holds[:4]  # both holds of slots 0 and 1
    for h in due:
        await expire_now(pool, h.id)
    assert (await slot_row(pool, slots[0]))["status"] == "booked"
    assert await expire_holds(app_ctx, batch_size=3) == 4  # two batches
    assert await expire_holds(app_ctx) == 0
    async with pool.acquire() as conn:
        statuses = dict(await conn.fetch("SELECT id, status FROM reservations"))
    assert {statuses[h.id] for h in due} == {"expired"}
    assert {statuses[h.id] for h in holds[4:]} == {"pending"}
    assert [(await slot_row(pool, s))["booked_count"] for s in slots] == [0, 0, 2]
    assert (await slot_row(pool, slots[0]))["status"] == "available"
    events = await outbox(pool, "reservation.expired")
    assert sorted(e["payload"]["reservation_id"] for e in events) == sorted(str(h.id) for h in due)
    p = events[0]["payload"]
    assert set(p) >= {
        "reservation_id",
        "user_id",
        "pet_id",
        "service_id",
        "slot_id",
        "expired_at",
        "event_id",
    }
    assert_models_own_json(events)  # the job's statement writes the models' own JSON, as the hold's does
    await assert_invariant(pool)


async def test_job_keeps_blocked_slots_blocked(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    h = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    async with pool.acquire() as conn:
        await conn.execute("UPDATE slots SET status = 'blocked' WHERE id = $1", slot)
    await expire_now(pool, h.id)
    assert await expire_holds(app_ctx) == 1
    row = await slot_row(pool, slot)
    assert (row["status"], row["booked_count"]) == ("blocked", 0)
    await assert_invariant(pool)


async def test_concurrent_sweepers_and_holds(app_ctx: Context, pool: Pool) -> None:
    """Two sweepers and new holds racing on the same slots: each hold expires once, capacity exact."""
    cat = await make_service(app_ctx)
    slots = [await make_slot(pool, cat.service_id, capacity=10, starts_in=dt.timedelta(days=d + 1)) for d in range(4)]
    holds = [await call(app_ctx, "booking.reservation.create", hold_body(cat, s)) for s in slots for _ in range(6)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE reservations SET expires_at = now() - interval '1 second'")
    results = await asyncio.gather(
        expire_holds(app_ctx, batch_size=5),
        expire_holds(app_ctx, batch_size=7),
        *(call(app_ctx, "booking.reservation.create", hold_body(cat, s)) for s in slots for _ in range(3)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    events = await outbox(pool, "reservation.expired")
    ids = [e["payload"]["reservation_id"] for e in events]
    assert sorted(ids) == sorted(str(h.id) for h in holds)  # exactly one event per hold
    assert [(await slot_row(pool, s))["booked_count"] for s in slots] == [3, 3, 3, 3]
    await assert_invariant(pool)


async def test_confirmed_or_cancelled_holds_are_not_touched(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=3)
    user = uuid.uuid4()
    h = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    await call(
        app_ctx,
        "booking.reservation.cancel",
        {"actor": {"id": str(user), "role": "user"}, "reservation_id": str(h.id), "lock_id": h.lock_id},
    )
    async with pool.acquire() as conn:
        await conn.execute("UPDATE reservations SET expires_at = now() - interval '1 hour'")
    assert await expire_holds(app_ctx) == 0
    assert (await slot_row(pool, slot))["booked_count"] == 0
    # a second cancel still answers the cancelled hold and gives nothing back twice
    again = await call(
        app_ctx,
        "booking.reservation.cancel",
        {"actor": {"id": str(user), "role": "user"}, "reservation_id": str(h.id), "lock_id": h.lock_id},
    )
    assert again.status == "cancelled"
    assert (await slot_row(pool, slot))["booked_count"] == 0
    assert await outbox(pool, "reservation.expired") == []
    await assert_invariant(pool)


async def test_a_hold_locked_elsewhere_is_skipped_not_waited_for(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slots = [await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=d + 1)) for d in range(2)]
    a = await call(app_ctx, "booking.reservation.create", hold_body(cat, slots[0]))
    b = await call(app_ctx, "booking.reservation.create", hold_body(cat, slots[1]))
    await expire_now(pool, a.id)
    await expire_now(pool, b.id)
    async with pool.acquire() as other, other.transaction():
        # another replica (or a confirm) holds `a`'s row lock: the sweep takes `b` and returns at once
        await other.execute("SELECT 1 FROM reservations WHERE id = $1 FOR UPDATE", a.id)
        assert await asyncio.wait_for(expire_holds(app_ctx), timeout=5) == 1
    assert await expire_holds(app_ctx) == 1  # and `a` on the next run
    assert [(await slot_row(pool, s))["booked_count"] for s in slots] == [0, 0]
    assert len(await outbox(pool, "reservation.expired")) == 2
    await assert_invariant(pool)
