"""booking.booking.reschedule: one transaction moves the unit, the booking, its reminders, audit and event;
a refused target leaves the booking untouched; races keep capacity exact (booking-anchors scenario 10)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from typing import Any

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from tests.helpers import (
    Booked,
    assert_invariant,
    book,
    call,
    call_err,
    fetch,
    fetchrow,
    hold,
    hold_body,
    make_service,
    make_slot,
    outbox,
    set_status,
    shift_slot,
    staff,
    user_actor,
    validate_outbox,
)


def body(b: Booked, slot: uuid.UUID, actor: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "actor": actor or user_actor(b.user),
        "booking_id": str(b.booking.id),
        "slot_id": str(slot),
        **{k: str(v) for k, v in extra.items()},
    }


async def counts(pool: Pool, *slots: uuid.UUID) -> list[int]:
    rows = {r["id"]: r["booked_count"] for r in await fetch(pool, "SELECT id, booked_count FROM slots")}
    return [rows[s] for s in slots]


async def outcome(coro: Any) -> str:
    try:
        await coro
    except RpcError as err:
        return err.code
    return "ok"


async def two_reschedules(
    ctx: Context, pool: Pool, guarded: bool = False
) -> tuple[Booked, uuid.UUID, uuid.UUID, list[str]]:
    """A booking and two new slots x and y, and the outcomes of moving it to each at once (`guarded`: both
    expect the booking on its first slot, expected_slot_id)."""
    b = await book(ctx, pool)
    x = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=4))
    y = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    extra = {"expected_slot_id": b.slot} if guarded else {}
    moves = (call(ctx, "booking.booking.reschedule", body(b, slot, **extra)) for slot in (x, y))
    return b, x, y, list(await asyncio.gather(*(outcome(move) for move in moves)))


async def test_reschedule_moves_unit_booking_reminders_audit_and_one_event(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    new = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    out = await call(app_ctx, "booking.booking.reschedule", body(b, new, reason="vet on leave"))
    assert (out.slot_id, out.status, out.reschedule_count) == (new, "confirmed", 1)
    slot = await fetchrow(pool, "SELECT starts_at, ends_at, slot_date, slot_start_time FROM slots WHERE id = $1", new)
    assert out.booking_time == slot["starts_at"] and out.slot_date == slot["slot_date"]
    assert out.reference_code == b.booking.reference_code and out.payment == b.booking.payment
    assert await counts(pool, b.slot, new) == [0, 1]
    assert (await hold(app_ctx, b.cat, b.slot, uuid.uuid4())).status == "pending"  # the old slot is free at once
    reminders = await fetch(
        pool, "SELECT reminder_type, status, scheduled_time FROM booking_reminders WHERE booking_id = $1", b.booking.id
    )
    pending = {r["reminder_type"]: r["scheduled_time"] for r in reminders if r["status"] == "pending"}
    assert pending["upcoming"] == slot["starts_at"] - dt.timedelta(hours=24)
    assert pending["check_in"] == slot["starts_at"]
    assert sum(r["status"] == "cancelled" for r in reminders) == len(pending)  # the old ones, cancelled
    log = await fetch(
        pool,
        """SELECT e.action, e.previous_state, e.new_state, e.notes FROM booking_log_entries e
           JOIN booking_logs l ON l.id = e.log_id WHERE l.booking_id = $1 AND e.action = 'rescheduled'""",
        b.booking.id,
    )
    assert len(log) == 1 and log[0]["notes"] == "vet on leave"
    assert log[0]["previous_state"]["slot_id"] == str(b.slot) and log[0]["new_state"]["slot_id"] == str(new)
    events = await outbox(pool, "booking.rescheduled")
    assert len(events) == 1
    p = events[0]["payload"]
    assert (p["booking_id"], p["reference_code"]) == (str(b.booking.id), b.booking.reference_code)
    assert (p["previous_slot_id"], p["new_slot_id"]) == (str(b.slot), str(new))
    assert p["new_slot_time"] == slot["slot_start_time"].isoformat() and p["rescheduled_by"] == str(b.user)
    assert await outbox(pool, "booking.status_changed") == []
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_a_refused_target_leaves_the_booking_untouched(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    full = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=4))
    await hold(app_ctx, b.cat, full, uuid.uuid4())
    blocked = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    await call(app_ctx, "booking.slots.block", {"actor": staff(b.cat.clinic_id), "slot_id": str(blocked)})
    past = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=6))
    await shift_slot(pool, past, -dt.timedelta(hours=1))
    for slot, code in ((full, "SLOT_FULL"), (blocked, "SLOT_BLOCKED"), (past, "SLOT_IN_PAST")):
        err = await call_err(app_ctx, "booking.booking.reschedule", body(b, slot))
        assert (err.code, err.status_code) == (code, 409)
    elsewhere = await make_service(app_ctx)
    foreign = await make_slot(pool, elsewhere.service_id)
    assert (await call_err(app_ctx, "booking.booking.reschedule", body(b, foreign))).code == "NOT_FOUND"
    stranger = await call_err(app_ctx, "booking.booking.reschedule", body(b, full, actor=user_actor(uuid.uuid4())))
    assert stranger.code == "NOT_FOUND"
    row = await fetchrow(pool, "SELECT slot_id, reschedule_count FROM bookings WHERE id = $1", b.booking.id)
    assert (row["slot_id"], row["reschedule_count"]) == (b.slot, 0)
    assert await counts(pool, b.slot, full, blocked, past) == [1, 1, 0, 0]
    assert await outbox(pool, "booking.rescheduled") == []
    await assert_invariant(pool)


async def test_same_price_services_of_the_clinic_only(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    twin = await make_service(app_ctx, clinic_id=b.cat.clinic_id, name="Booster")  # the same price
    dearer = await make_service(app_ctx, clinic_id=b.cat.clinic_id, name="Surgery", price="900000.00")
    err = await call_err(app_ctx, "booking.booking.reschedule", body(b, await make_slot(pool, dearer.service_id)))
    assert err.code == "RESCHEDULE_NOT_ALLOWED" and "900000.00" in err.message
    out = await call(app_ctx, "booking.booking.reschedule", body(b, await make_slot(pool, twin.service_id)))
    assert out.service_id == twin.service_id and out.service_snapshot["name"] == "Booster"
    await validate_outbox(pool)


async def test_policy_cutoff_staff_override_and_maximum(app_ctx: Context, pool: Pool) -> None:
    ctx = dataclasses.replace(app_ctx, settings=app_ctx.settings.model_copy(update={"max_reschedules": 2}))
    b = await book(ctx, pool)
    await shift_slot(pool, b.slot, dt.timedelta(hours=3))  # inside the 24 h cut-off
    first = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=4))
    err = await call_err(ctx, "booking.booking.reschedule", body(b, first))
    assert (err.code, err.status_code) == ("RESCHEDULE_NOT_ALLOWED", 409) and "24 hours" in err.details["reason"]
    clinic = staff(b.cat.clinic_id)
    await call(ctx, "booking.booking.reschedule", body(b, first, actor=clinic))  # staff override the cut-off
    second = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    await call(ctx, "booking.booking.reschedule", body(b, second))
    third = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=6))
    err = await call_err(ctx, "booking.booking.reschedule", body(b, third, actor=clinic))
    assert err.code == "RESCHEDULE_NOT_ALLOWED" and "2 times" in err.details["reason"]
    retried = await call(ctx, "booking.booking.reschedule", body(b, second))  # already there: a no-op
    assert retried.reschedule_count == 2
    await set_status(ctx, b, "in-progress")
    assert (await call_err(ctx, "booking.booking.reschedule", body(b, third, actor=clinic))).code == (
        "RESCHEDULE_NOT_ALLOWED"
    )
    await assert_invariant(pool)


async def test_two_reschedules_of_one_booking_one_wins(app_ctx: Context, pool: Pool) -> None:
    b, x, y, results = await two_reschedules(app_ctx, pool, guarded=True)
    assert sorted(results) == ["CONFLICT", "ok"]
    row = await fetchrow(pool, "SELECT slot_id, reschedule_count FROM bookings WHERE id = $1", b.booking.id)
    assert row["slot_id"] == (x if results[0] == "ok" else y) and row["reschedule_count"] == 1
    assert sorted(await counts(pool, b.slot, x, y)) == [0, 0, 1]
    assert len(await outbox(pool, "booking.rescheduled")) == 1
    await assert_invariant(pool)


async def test_reschedule_against_cancel_and_complete(app_ctx: Context, pool: Pool) -> None:
    for _ in range(3):
        b = await book(app_ctx, pool)
        target = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=4))
        cancel = call(
            app_ctx,
            "booking.booking.cancel",
            {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "changed my mind"},
        )
        moved, cancelled = await asyncio.gather(
            outcome(call(app_ctx, "booking.booking.reschedule", body(b, target))), outcome(cancel)
        )
        assert cancelled == "ok" and moved in ("ok", "RESCHEDULE_NOT_ALLOWED")
        assert await counts(pool, b.slot, target) == [0, 0]
        await assert_invariant(pool)

        c = await book(app_ctx, pool)
        target = await make_slot(pool, c.cat.service_id, starts_in=dt.timedelta(days=4))
        await shift_slot(pool, c.slot, dt.timedelta(days=2))

        async def visit(c: Booked = c) -> None:
            await set_status(app_ctx, c, "in-progress")
            await set_status(app_ctx, c, "completed")

        moved, visited = await asyncio.gather(
            outcome(call(app_ctx, "booking.booking.reschedule", body(c, target, actor=staff(c.cat.clinic_id)))),
            outcome(visit()),
        )
        assert visited == "ok" and moved in ("ok", "RESCHEDULE_NOT_ALLOWED")
        row = await fetchrow(pool, "SELECT slot_id, status FROM bookings WHERE id = $1", c.booking.id)
        assert row["status"] == "completed" and row["slot_id"] == (target if moved == "ok" else c.slot)
        assert sorted(await counts(pool, c.slot, target)) == [0, 1]
        await assert_invariant(pool)
    await validate_outbox(pool)


async def test_reschedule_into_a_slot_fifty_holds_fight_for(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    contested = await make_slot(pool, b.cat.service_id, capacity=3, starts_in=dt.timedelta(days=4))
    holds = [outcome(call(app_ctx, "booking.reservation.create", hold_body(b.cat, contested))) for _ in range(50)]
    moved, *held = await asyncio.gather(
        outcome(call(app_ctx, "booking.booking.reschedule", body(b, contested))), *holds
    )
    assert set(held) <= {"ok", "SLOT_FULL"}
    taken = held.count("ok") + (moved == "ok")
    assert taken == 3
    assert await counts(pool, contested) == [3]
    row = await fetchrow(pool, "SELECT slot_id FROM bookings WHERE id = $1", b.booking.id)
    assert row["slot_id"] == (contested if moved == "ok" else b.slot)
    if moved != "ok":
        assert moved == "SLOT_FULL"
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_rescheduling_away_offers_the_old_slot_to_its_first_waiter(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    waiter = uuid.uuid4()
    joined = await call(
        app_ctx,
        "booking.waitlist.join",
        {
            "actor": user_actor(waiter),
            "user_id": str(waiter),
            "pet_id": str(uuid.uuid4()),
            "service_id": str(b.cat.service_id),
            "slot_id": str(b.slot),
        },
    )
    assert joined.status == "waiting"
    new = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    await call(app_ctx, "booking.booking.reschedule", body(b, new))
    page = await call(app_ctx, "booking.waitlist.find", {"actor": user_actor(waiter)})
    assert [e.status for e in page.items] == ["offered"]
    assert await counts(pool, b.slot, new) == [1, 1]
    await assert_invariant(pool)
    await validate_outbox(pool)


async def test_the_default_maximum_is_three_reschedules(app_ctx: Context, pool: Pool) -> None:
    assert app_ctx.settings.max_reschedules == 3  # BOOKING_RPC_MAX_RESCHEDULES unset
    b = await book(app_ctx, pool)
    for day in (4, 5, 6):
        slot = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=day))
        assert (await call(app_ctx, "booking.booking.reschedule", body(b, slot))).reschedule_count == day - 3
    fourth = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=7))
    for actor in (user_actor(b.user), staff(b.cat.clinic_id)):  # the maximum binds staff too
        err = await call_err(app_ctx, "booking.booking.reschedule", body(b, fourth, actor=actor))
        assert err.code == "RESCHEDULE_NOT_ALLOWED" and "3 times (at most 3)" in err.details["reason"]
    assert await counts(pool, fourth) == [0]
    await assert_invariant(pool)


async def test_two_unguarded_reschedules_run_one_after_the_other(app_ctx: Context, pool: Pool) -> None:
    # without expected_slot_id the second waits on the booking's lock and moves the booking as the first left it
    b, x, y, results = await two_reschedules(app_ctx, pool)
    assert results == ["ok", "ok"]
    first, second = [r["payload"] for r in await outbox(pool, "booking.rescheduled")]
    assert first["previous_slot_id"] == str(b.slot)
    assert second["previous_slot_id"] == first["new_slot_id"]  # the second saw the moved booking
    assert {first["new_slot_id"], second["new_slot_id"]} == {str(x), str(y)}
    row = await fetchrow(pool, "SELECT slot_id, reschedule_count FROM bookings WHERE id = $1", b.booking.id)
    assert (str(row["slot_id"]), row["reschedule_count"]) == (second["new_slot_id"], 2)
    assert await counts(pool, b.slot) == [0] and sorted(await counts(pool, x, y)) == [0, 1]
    await assert_invariant(pool)
    await validate_outbox(pool)
