"""The waitlist: first come, first offered a real hold when a unit frees, in the transaction that frees it."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from booking_rpc.jobs.expiry import expire_holds
from tests.helpers import (
    Catalog,
    assert_invariant,
    book,
    call,
    call_err,
    expire_now,
    fetchrow,
    hold,
    hold_body,
    make_service,
    make_slot,
    outbox,
    staff,
    starts_in_at,
    user_actor,
    validate_outbox,
)


def join_body(cat: Catalog, user: uuid.UUID, **target: Any) -> dict[str, Any]:
    return {
        "actor": user_actor(user),
        "user_id": str(user),
        "pet_id": str(uuid.uuid4()),
        "service_id": str(cat.service_id),
        **{k: str(v) for k, v in target.items()},
    }


async def join(ctx: Context, cat: Catalog, user: uuid.UUID, **target: Any) -> Any:
    return await call(ctx, "booking.waitlist.join", join_body(cat, user, **target))


async def entry(ctx: Context, user: uuid.UUID, entry_id: uuid.UUID) -> Any:
    page = await call(ctx, "booking.waitlist.find", {"actor": user_actor(user), "active_only": False})
    return next(e for e in page.items if e.id == entry_id)


async def full_slot(ctx: Context, pool: Pool, capacity: int = 1) -> tuple[Catalog, uuid.UUID, list[Any]]:
    cat = await make_service(ctx)
    slot = await make_slot(pool, cat.service_id, capacity=capacity)
    holds = [await hold(ctx, cat, slot, uuid.uuid4()) for _ in range(capacity)]
    return cat, slot, holds


async def cancel_hold(ctx: Context, res: Any) -> None:
    await call(
        ctx,
        "booking.reservation.cancel",
        {"actor": user_actor(res.user_id), "reservation_id": str(res.id), "lock_id": res.lock_id},
    )


async def two_waiters_then_a_cancel(ctx: Context, pool: Pool) -> tuple[Catalog, uuid.UUID, Any, Any]:
    """A full slot, two users waiting for it in order, then its hold cancelled."""
    cat, slot, (taken,) = await full_slot(ctx, pool)
    first, second = uuid.uuid4(), uuid.uuid4()
    a = await join(ctx, cat, first, slot_id=slot)
    b = await join(ctx, cat, second, slot_id=slot)
    await cancel_hold(ctx, taken)
    return cat, slot, (first, a), (second, b)


async def booked_count(pool: Pool, slot: uuid.UUID) -> int:
    return int((await fetchrow(pool, "SELECT booked_count FROM slots WHERE id = $1", slot))["booked_count"])


async def test_join_queue_positions_and_idempotent_join(app_ctx: Context, pool: Pool) -> None:
    cat, slot, _ = await full_slot(app_ctx, pool)
    first, second = uuid.uuid4(), uuid.uuid4()
    a = await join(app_ctx, cat, first, slot_id=slot)
    b = await join(app_ctx, cat, second, slot_id=slot)
    assert (a.status, a.position, b.status, b.position) == ("waiting", 1, "waiting", 2)
    again = await join(app_ctx, cat, first, slot_id=slot)
    assert again.id == a.id
    left = await call(app_ctx, "booking.waitlist.leave", {"actor": user_actor(first), "entry_id": str(a.id)})
    assert left.status == "left"
    assert (await entry(app_ctx, second, b.id)).position == 1
    err = await call_err(
        app_ctx, "booking.waitlist.join", {**join_body(cat, first, slot_id=slot), "date": "2030-01-01"}
    )
    assert err.code == "VALIDATION_FAILED"
    other = await call_err(app_ctx, "booking.waitlist.find", {"actor": user_actor(first), "user_id": str(second)})
    assert other.code == "FORBIDDEN"


async def test_a_cancelled_hold_goes_to_the_first_waiter_in_the_same_transaction(app_ctx: Context, pool: Pool) -> None:
    cat, slot, (first, a), (second, b) = await two_waiters_then_a_cancel(app_ctx, pool)
    assert await booked_count(pool, slot) == 1  # the unit went straight to the waiter
    offered = await entry(app_ctx, first, a.id)
    assert offered.status == "offered" and offered.lock_id and offered.reservation_id
    assert (await entry(app_ctx, second, b.id)).position == 1
    # a newcomer cannot take it
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    assert err.code == "SLOT_FULL"
    events = await outbox(pool, "waitlist.offered")
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["reservation_id"] == str(offered.reservation_id) and payload["lock_id"] == offered.lock_id
    assert payload["user_id"] == str(first) and payload["slot_id"] == str(slot)
    assert payload["expires_at"] == offered.expires_at.isoformat().replace("+00:00", "Z")
    # the waiter confirms it like any hold
    res = await fetchrow(pool, "SELECT * FROM reservations WHERE id = $1", offered.reservation_id)
    booking = await call(
        app_ctx,
        "booking.reservation.confirm",
        {
            "actor": user_actor(first),
            "reservation_id": str(res["id"]),
            "lock_id": res["lock_id"],
            "user_id": str(first),
        },
    )
    assert booking.status == "confirmed" and booking.slot_id == slot
    assert (await entry(app_ctx, first, a.id)).status == "booked"
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_an_unconfirmed_offer_expires_and_the_next_waiter_is_offered(app_ctx: Context, pool: Pool) -> None:
    cat, slot, (first, a), (second, b) = await two_waiters_then_a_cancel(app_ctx, pool)
    offer = await entry(app_ctx, first, a.id)
    await expire_now(pool, offer.reservation_id)
    # past its TTL the offer's unit still waits for the queue: a newcomer does not get it
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    assert err.code == "SLOT_FULL"
    check = await call(app_ctx, "booking.availability.check", {"service_id": str(cat.service_id), "slot_id": str(slot)})
    assert (check.available, check.reason) == (False, "SLOT_FULL")
    assert await expire_holds(app_ctx) == 1
    assert (await entry(app_ctx, first, a.id)).status == "expired"
    nxt = await entry(app_ctx, second, b.id)
    assert nxt.status == "offered" and nxt.reservation_id != offer.reservation_id
    assert await booked_count(pool, slot) == 1
    assert len(await outbox(pool, "waitlist.offered")) == 2
    # nobody left waiting: once this one lapses too, anyone may take the unit again
    await expire_now(pool, nxt.reservation_id)
    assert (await hold(app_ctx, cat, slot, uuid.uuid4())).status == "pending"
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_date_waiters_unblock_and_a_free_unit_offered_on_join(app_ctx: Context, pool: Pool) -> None:
    cat, slot, (taken,) = await full_slot(app_ctx, pool)
    day = (await fetchrow(pool, "SELECT slot_date FROM slots WHERE id = $1", slot))["slot_date"]
    waiter = uuid.uuid4()
    e = await join(app_ctx, cat, waiter, date=day)
    assert (e.status, e.slot_id, e.date) == ("waiting", None, day)
    await cancel_hold(app_ctx, taken)
    assert (await entry(app_ctx, waiter, e.id)).status == "offered"
    # a slot with a free unit: joining is an immediate offer
    free = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=4))
    now = await join(app_ctx, cat, uuid.uuid4(), slot_id=free)
    assert now.status == "offered" and now.lock_id
    # unblocking gives the freed units to the waiters
    blocked = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=5))
    clinic = staff(cat.clinic_id)
    await call(app_ctx, "booking.slots.block", {"actor": clinic, "slot_id": str(blocked)})
    w = await join(app_ctx, cat, uuid.uuid4(), slot_id=blocked)
    assert w.status == "waiting"
    out = await call(app_ctx, "booking.slots.unblock", {"actor": clinic, "slot_id": str(blocked)})
    assert (out.booked_count, out.status) == (1, "booked")
    assert (await entry(app_ctx, w.user_id, w.id)).status == "offered"
    staff_view = await call(
        app_ctx, "booking.waitlist.find", {"actor": clinic, "slot_id": str(blocked), "active_only": False}
    )
    assert [x.id for x in staff_view.items] == [w.id] and staff_view.items[0].lock_id is None
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_nobody_jumps_the_queue_and_capacity_holds_under_concurrency(app_ctx: Context, pool: Pool) -> None:
    # capacity 3, full; 6 waiters in order; then 3 holds are cancelled while 40 newcomers try to hold
    cat, slot, holds = await full_slot(app_ctx, pool, capacity=3)
    waiters = [uuid.uuid4() for _ in range(6)]
    entries = [await join(app_ctx, cat, w, slot_id=slot) for w in waiters]

    async def newcomer() -> str:
        try:
            await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
        except RpcError as err:
            return err.code
        return "held"

    results = await asyncio.gather(*[cancel_hold(app_ctx, h) for h in holds], *[newcomer() for _ in range(40)])
    assert set(results[3:]) == {"SLOT_FULL"}
    states = [(await entry(app_ctx, w, e.id)).status for w, e in zip(waiters, entries, strict=True)]
    assert states == ["offered"] * 3 + ["waiting"] * 3
    assert await booked_count(pool, slot) == 3
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_two_slots_freeing_at_once_offer_each_date_waiter_once(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    start = starts_in_at(2, dt.time(10))  # and 11:00: "now + 2 days" and an hour later fell on two dates after 23:00
    slots = [await make_slot(pool, cat.service_id, starts_in=start + dt.timedelta(minutes=60 * i)) for i in range(2)]
    day = (await fetchrow(pool, "SELECT slot_date FROM slots WHERE id = $1", slots[0]))["slot_date"]
    assert (await fetchrow(pool, "SELECT slot_date FROM slots WHERE id = $1", slots[1]))["slot_date"] == day
    holds = [await hold(app_ctx, cat, s, uuid.uuid4()) for s in slots]
    waiters = [uuid.uuid4() for _ in range(3)]
    entries = [await join(app_ctx, cat, w, date=day) for w in waiters]
    await asyncio.gather(*[cancel_hold(app_ctx, h) for h in holds])
    states = [(await entry(app_ctx, w, e.id)).status for w, e in zip(waiters, entries, strict=True)]
    assert sorted(states) == ["offered", "offered", "waiting"]
    offered = {(await entry(app_ctx, w, e.id)).reservation_id for w, e in zip(waiters, entries, strict=True)} - {None}
    assert len(offered) == 2
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_a_cancelled_booking_goes_to_the_first_waiter(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    waiter = uuid.uuid4()
    e = await join(app_ctx, b.cat, waiter, slot_id=b.slot)
    await call(
        app_ctx,
        "booking.booking.cancel",
        {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "moved away"},
    )
    assert (await entry(app_ctx, waiter, e.id)).status == "offered"
    assert await booked_count(pool, b.slot) == 1
    await assert_invariant(pool)
    await validate_outbox(pool)


async def other_day(pool: Pool, cat: Catalog, n: int) -> uuid.UUID:
    """A slot of the service n + 3 days ahead (one start per service and day: the slots' unique key)."""
    return await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=n + 3))


async def pending_holds(pool: Pool, user: uuid.UUID) -> int:
    row = await fetchrow(pool, "SELECT count(*) AS n FROM reservations WHERE user_id = $1 AND status = 'pending'", user)
    return int(row["n"])


async def test_an_offer_counts_toward_the_hold_quota_and_a_waiter_at_it_keeps_their_place(
    app_ctx: Context, pool: Pool
) -> None:
    quota = app_ctx.settings.max_active_holds_per_user
    cat, slot, holds = await full_slot(app_ctx, pool, capacity=2)
    busy, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    own = [await hold(app_ctx, cat, await other_day(pool, cat, i), busy) for i in range(quota)]
    a = await join(app_ctx, cat, busy, slot_id=slot)
    b = await join(app_ctx, cat, second, slot_id=slot)
    c = await join(app_ctx, cat, third, slot_id=slot)
    await cancel_hold(app_ctx, holds[0])
    # the first waiter is at the quota: passed over for this unit, still first in line
    first = await entry(app_ctx, busy, a.id)
    assert (first.status, first.position) == ("waiting", 1)
    assert (await entry(app_ctx, second, b.id)).status == "offered"
    assert await pending_holds(pool, busy) == quota
    # under the quota again: the next unit is theirs, not the third waiter's
    await cancel_hold(app_ctx, own[0])
    await cancel_hold(app_ctx, holds[1])
    assert (await entry(app_ctx, busy, a.id)).status == "offered"
    assert (await entry(app_ctx, third, c.id)).status == "waiting"
    assert await pending_holds(pool, busy) == quota
    assert await booked_count(pool, slot) == 2
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_concurrent_offers_and_a_hold_never_take_a_user_past_the_quota(app_ctx: Context, pool: Pool) -> None:
    # one user with quota - 1 holds waits first for two full slots; both free at once while they hold a third
    quota = app_ctx.settings.max_active_holds_per_user
    cat = await make_service(app_ctx)
    busy, other = uuid.uuid4(), uuid.uuid4()
    for i in range(quota - 1):
        await hold(app_ctx, cat, await other_day(pool, cat, i), busy)
    full = [await other_day(pool, cat, quota + i) for i in range(2)]
    taken = [await hold(app_ctx, cat, s, uuid.uuid4()) for s in full]
    for s in full:
        await join(app_ctx, cat, busy, slot_id=s)
        await join(app_ctx, cat, other, slot_id=s)
    third = await other_day(pool, cat, quota + 2)

    async def own_hold() -> str:
        try:
            await hold(app_ctx, cat, third, busy)
        except RpcError as err:
            return err.code
        return "held"

    results = await asyncio.gather(*[cancel_hold(app_ctx, h) for h in taken], own_hold())
    assert results[-1] in {"held", "TOO_MANY_HOLDS"}
    assert await pending_holds(pool, busy) == quota
    # every freed unit went to a waiter: the busy user's place, else the next one's
    assert [await booked_count(pool, s) for s in full] == [1, 1]
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_a_lapsed_offer_goes_to_the_next_waiter_while_newcomers_and_a_reschedule_fight_for_it(
    app_ctx: Context, pool: Pool
) -> None:
    # the first waiter's offer lapses; the expiry job, 20 newcomers' holds and a booking rescheduled onto the
    # slot all run at once: the unit goes to the second waiter, nobody else gets it, capacity stays exact
    moving = await book(app_ctx, pool)
    cat = moving.cat
    slot = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=5))
    taken = await hold(app_ctx, cat, slot, uuid.uuid4())
    first, second = uuid.uuid4(), uuid.uuid4()
    a = await join(app_ctx, cat, first, slot_id=slot)
    b = await join(app_ctx, cat, second, slot_id=slot)
    await cancel_hold(app_ctx, taken)
    offer = await entry(app_ctx, first, a.id)
    assert offer.status == "offered"
    await expire_now(pool, offer.reservation_id)

    async def attempt(pattern: str, data: dict[str, Any]) -> str:
        try:
            await call(app_ctx, pattern, data)
        except RpcError as err:
            return err.code
        return "ok"

    move = {"actor": user_actor(moving.user), "booking_id": str(moving.booking.id), "slot_id": str(slot)}
    expired, moved, *held = await asyncio.gather(
        expire_holds(app_ctx),
        attempt("booking.booking.reschedule", move),
        *[attempt("booking.reservation.create", hold_body(cat, slot)) for _ in range(20)],
    )
    assert expired == 1 and moved == "SLOT_FULL" and set(held) == {"SLOT_FULL"}
    assert (await entry(app_ctx, first, a.id)).status == "expired"
    assert (await entry(app_ctx, second, b.id)).status == "offered"
    assert await booked_count(pool, slot) == 1
    row = await fetchrow(pool, "SELECT slot_id FROM bookings WHERE id = $1", moving.booking.id)
    assert row["slot_id"] == moving.slot
    await assert_invariant(pool)
    await validate_outbox(pool)
