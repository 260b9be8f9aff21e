"""Nobody hoards capacity: pending holds per user and per pet stop at the limit, whatever the concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from booking_rpc.app import build_context
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from booking_rpc.jobs.expiry import expire_holds
from tests.helpers import (
    admin,
    assert_invariant,
    call,
    fetch,
    hold_body,
    make_service,
    make_slot,
)


async def many_slots(ctx: Context, pool: Pool, count: int) -> tuple[Any, list[uuid.UUID]]:
    cat = await make_service(ctx)
    slots = [
        await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=2, minutes=40 * i)) for i in range(count)
    ]
    return cat, slots


async def outcomes(ctx: Context, bodies: list[dict[str, Any]]) -> list[str]:
    async def one(body: dict[str, Any]) -> str:
        try:
            await call(ctx, "booking.reservation.create", body)
        except RpcError as err:
            return err.code
        return "OK"

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def test_fifty_concurrent_holds_by_one_user_stop_at_the_limit(app_ctx: Context, pool: Pool) -> None:
    assert app_ctx.settings.max_active_holds_per_user == 3
    cat, slots = await many_slots(app_ctx, pool, 50)
    user = uuid.uuid4()
    # a new pet each time: only the user's limit applies
    got = await outcomes(app_ctx, [hold_body(cat, slot, user) for slot in slots])
    assert got.count("OK") == 3
    assert set(got) == {"OK", "TOO_MANY_HOLDS"}
    assert len(await fetch(pool, "SELECT 1 FROM reservations WHERE user_id = $1 AND status = 'pending'", user)) == 3
    # the refused ones took no capacity and wrote no event
    assert len(await fetch(pool, "SELECT 1 FROM slots WHERE booked_count > 0")) == 3
    assert len(await fetch(pool, "SELECT 1 FROM booking_events_outbox WHERE event_type = 'reservation.created'")) == 3
    await assert_invariant(pool)


async def test_a_pets_limit_holds_across_the_users_acting_for_it(pool: Pool, app_ctx: Context) -> None:
    ctx = build_context(app_ctx.settings.model_copy(update={"max_active_holds_per_pet": 2}), pool)
    cat, slots = await many_slots(ctx, pool, 20)
    pet = uuid.uuid4()
    bodies = [{**hold_body(cat, slot), "pet_id": str(pet), "actor": admin()} for slot in slots]
    got = await outcomes(ctx, bodies)
    assert got.count("OK") == 2 and got.count("TOO_MANY_HOLDS") == 18
    await assert_invariant(pool)


async def test_confirming_cancelling_or_expiring_gives_the_quota_back(app_ctx: Context, pool: Pool) -> None:
    cat, slots = await many_slots(app_ctx, pool, 5)
    user = uuid.uuid4()
    holds = [await call(app_ctx, "booking.reservation.create", hold_body(cat, s, user)) for s in slots[:3]]
    refused = await outcomes(app_ctx, [hold_body(cat, slots[3], user)])
    assert refused == ["TOO_MANY_HOLDS"]
    err_details: Any = None
    try:
        await call(app_ctx, "booking.reservation.create", hold_body(cat, slots[3], user))
    except RpcError as err:
        err_details = (err.status_code, err.details)
    assert err_details == (429, {"max_per_user": 3, "max_per_pet": 3, "limit": "user"})
    await call(
        app_ctx,
        "booking.reservation.cancel",
        {"actor": {"id": str(user), "role": "user"}, "reservation_id": str(holds[0].id), "lock_id": holds[0].lock_id},
    )
    assert await outcomes(app_ctx, [hold_body(cat, slots[3], user)]) == ["OK"]
    async with pool.acquire() as conn:  # one hold lapses; the sweep gives its quota back
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1", holds[1].id
        )
    assert await outcomes(app_ctx, [hold_body(cat, slots[4], user)]) == ["TOO_MANY_HOLDS"]
    assert await expire_holds(app_ctx) == 1
    assert await outcomes(app_ctx, [hold_body(cat, slots[4], user)]) == ["OK"]
    await assert_invariant(pool)
