"""The hold engine against real PostgreSQL: zero overbooking, idempotency, cancel, TTL, error paths."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import orjson
import pytest

from booking_rpc import jsonutil
from booking_rpc.client import Client, RemoteError
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.errors import RpcError
from booking_rpc.handlers.reservations import reservation_out
from booking_rpc.jobs.expiry import expire_holds
from booking_rpc.models.reservations import ReservationOut
from tests.helpers import (
    admin,
    app_router,
    assert_invariant,
    assert_models_own_json,
    assert_reply_published,
    call,
    call_err,
    expire_now,
    hold_body,
    insert_booking,
    make_service,
    make_slot,
    outbox,
    slot_row,
    snapshot,
    user_actor,
    validate_outbox,
)

# --- create ---------------------------------------------------------------------------------------------


async def test_create_holds_a_unit_and_writes_the_event(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=2)
    body = hold_body(cat, slot)
    res = await call(app_ctx, "booking.reservation.create", body)
    assert res.status == "pending"
    assert len(res.lock_id) >= 32
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT *, expires_at - created_at AS ttl FROM reservations WHERE id = $1", res.id)
    assert row is not None
    assert row["status"] == "pending" and row["lock_id"] == res.lock_id
    assert row["ttl"] == dt.timedelta(seconds=app_ctx.settings.hold_ttl_seconds)
    s = await slot_row(pool, slot)
    assert (s["booked_count"], s["status"]) == (1, "available")
    events = await outbox(pool, "reservation.created")
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["reservation_id"] == str(res.id) and payload["slot_id"] == str(slot)
    assert events[0]["aggregate_id"] == res.id
    # the second unit fills it: status 'booked'
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    s = await slot_row(pool, slot)
    assert (s["booked_count"], s["status"]) == (2, "booked")
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    assert (err.code, err.status_code) == ("SLOT_FULL", 409)
    await assert_invariant(pool)


async def test_concurrent_in_process_capacity(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=3)
    results = await asyncio.gather(
        *(call(app_ctx, "booking.reservation.create", hold_body(cat, slot)) for _ in range(200)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 3
    assert all(isinstance(e, RpcError) and e.code == "SLOT_FULL" for e in errors)
    assert (await slot_row(pool, slot))["booked_count"] == 3
    await assert_invariant(pool)


async def test_idempotent_replay_and_conflict(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=5)
    other = await make_slot(pool, cat.service_id, capacity=5, starts_in=dt.timedelta(days=3))
    body = hold_body(cat, slot, idempotency_key="retry-1")
    first = await call(app_ctx, "booking.reservation.create", body)
    again = await call(app_ctx, "booking.reservation.create", body)
    assert again.id == first.id and again.lock_id == first.lock_id
    assert (await slot_row(pool, slot))["booked_count"] == 1
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.reservation.create", {**body, "slot_id": str(other)})
    assert (err.code, err.status_code) == ("IDEMPOTENCY_CONFLICT", 409)
    assert await snapshot(pool) == before
    # another user may use the same key
    other_user = hold_body(cat, slot, idempotency_key="retry-1")
    assert (await call(app_ctx, "booking.reservation.create", other_user)).id != first.id
    await assert_invariant(pool)


async def test_the_hold_writes_the_reply_as_the_service_writes_the_row(app_ctx: Context, pool: Pool) -> None:
    """reservations.hold renders the create's reply itself (`reservation`): byte for byte what the service
    writes for the stored row (row_json, orjson: what a replay of the key answers), with a key that needs
    every kind of escape JSON has, and with none (null)."""
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=5)
    route = app_router().lookup("booking.reservation.create")
    assert route is not None
    awkward = 'k "\\/' + "".join(map(chr, range(1, 32))) + "\x7f é ☃ 😀 \u2028"
    hold = app_ctx.sql["reservations.hold"]
    async with pool.acquire() as conn:
        for key in (awkward, None):
            row = await conn.fetchrow(
                hold, uuid.uuid4(), uuid.uuid4(), cat.service_id, slot, "l", 60, key, None, 5, 5, None
            )
            assert row is not None
            stored = await conn.fetchrow(app_ctx.sql["reservations.get"], row["id"])
            assert row["reservation"].encode() == jsonutil.dumps(reservation_out(stored))
    # over the route: the create's reply is the statement's, and the replay's (rendered in Python) the same
    body = hold_body(cat, slot, idempotency_key=awkward)
    created = jsonutil.dumps(await route.invoke(body, app_ctx))
    assert_reply_published(route.route, orjson.Fragment(created))
    assert ReservationOut.model_validate_json(created).idempotency_key == awkward
    assert jsonutil.dumps(await route.invoke(body, app_ctx)) == created


async def test_idempotent_racing_retries_take_one_unit(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    body = hold_body(cat, slot, idempotency_key="double-click")
    results = await asyncio.gather(*(call(app_ctx, "booking.reservation.create", body) for _ in range(20)))
    assert len({r.id for r in results}) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reservations") == 1
    assert (await slot_row(pool, slot))["booked_count"] == 1
    await assert_invariant(pool)


async def test_one_user_cannot_hold_a_slot_twice(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=3)
    user = uuid.uuid4()
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    assert (err.code, err.status_code) == ("ALREADY_HELD", 409)
    assert await snapshot(pool) == before
    # racing double click without a key: one hold, the rest ALREADY_HELD
    slot2 = await make_slot(pool, cat.service_id, capacity=3, starts_in=dt.timedelta(days=4))
    results = await asyncio.gather(
        *(call(app_ctx, "booking.reservation.create", hold_body(cat, slot2, user)) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(r.code == "ALREADY_HELD" for r in results if isinstance(r, RpcError))
    assert (await slot_row(pool, slot2))["booked_count"] == 1
    await assert_invariant(pool)


async def test_every_error_path_changes_nothing(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, availability_exceptions=[{"start_date": "2000-01-01", "end_date": "2000-01-02"}])
    open_slot = await make_slot(pool, cat.service_id, capacity=1)
    blocked = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=3), status="blocked")
    past = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(hours=-3))
    full = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=4))
    await call(app_ctx, "booking.reservation.create", hold_body(cat, full))
    closed = await make_service(app_ctx, is_available=False)
    closed_slot = await make_slot(pool, closed.service_id)
    holiday_day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).date()
    holiday = await make_service(app_ctx, availability_exceptions=[{"date": holiday_day.isoformat(), "reason": "Eid"}])
    holiday_slot = await make_slot(pool, holiday.service_id, starts_in=dt.timedelta(days=5))
    someone = uuid.uuid4()
    cases: list[tuple[dict[str, Any], str, int]] = [
        (hold_body(cat, uuid.uuid4()), "NOT_FOUND", 404),
        (hold_body(closed, open_slot), "NOT_FOUND", 404),  # slot of another service
        (hold_body(cat, blocked), "SLOT_BLOCKED", 409),
        (hold_body(cat, past), "SLOT_IN_PAST", 409),
        (hold_body(cat, full), "SLOT_FULL", 409),
        (hold_body(closed, closed_slot), "SERVICE_NOT_BOOKABLE", 409),
        (hold_body(holiday, holiday_slot), "AVAILABILITY_EXCEPTION", 409),
        ({**hold_body(cat, open_slot), "actor": None}, "UNAUTHENTICATED", 401),
        ({**hold_body(cat, open_slot), "actor": user_actor(someone)}, "FORBIDDEN", 403),
        (
            {**hold_body(cat, open_slot), "actor": {"id": str(someone), "role": "clinic_staff"}},
            "FORBIDDEN",
            403,
        ),
        ({**hold_body(cat, open_slot), "pet_id": "not-a-uuid"}, "VALIDATION_FAILED", 400),
        ({**hold_body(cat, open_slot), "extra": 1}, "VALIDATION_FAILED", 400),
    ]
    before = await snapshot(pool)
    for body, code, status in cases:
        err = await call_err(app_ctx, "booking.reservation.create", body)
        assert (err.code, err.status_code) == (code, status), (code, err)
        assert err.to_wire()["status"] == "error"
        assert await snapshot(pool) == before, code
    await assert_invariant(pool)


async def test_admin_may_hold_for_a_user(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await call(app_ctx, "booking.reservation.create", {**hold_body(cat, slot), "actor": admin()})
    assert res.status == "pending"


# --- cancel ---------------------------------------------------------------------------------------------


async def test_cancel_gives_the_unit_back_once(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    user = uuid.uuid4()
    res = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    assert (await slot_row(pool, slot))["status"] == "booked"
    before = await snapshot(pool)
    for body, code in (
        ({"actor": user_actor(user), "reservation_id": str(res.id), "lock_id": "wrong"}, "LOCK_MISMATCH"),
        (
            {"actor": user_actor(uuid.uuid4()), "reservation_id": str(res.id), "lock_id": res.lock_id},
            "FORBIDDEN",
        ),
        ({"reservation_id": str(res.id), "lock_id": res.lock_id}, "UNAUTHENTICATED"),
        (
            {"actor": user_actor(user), "reservation_id": str(uuid.uuid4()), "lock_id": res.lock_id},
            "NOT_FOUND",
        ),
    ):
        err = await call_err(app_ctx, "booking.reservation.cancel", body)
        assert err.code == code
        assert await snapshot(pool) == before
    body = {"actor": user_actor(user), "reservation_id": str(res.id), "lock_id": res.lock_id}
    out = await call(app_ctx, "booking.reservation.cancel", body)
    assert out.status == "cancelled"
    s = await slot_row(pool, slot)
    assert (s["booked_count"], s["status"]) == (0, "available")
    again = await call(app_ctx, "booking.reservation.cancel", body)
    assert again.status == "cancelled"
    assert (await slot_row(pool, slot))["booked_count"] == 0
    assert len(await outbox(pool, "reservation.cancelled")) == 1
    await assert_invariant(pool)


async def test_cancel_after_ttl_is_refused_and_changes_nothing(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    user = uuid.uuid4()
    res = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    await expire_now(pool, res.id)
    before = await snapshot(pool)
    err = await call_err(
        app_ctx,
        "booking.reservation.cancel",
        {"actor": user_actor(user), "reservation_id": str(res.id), "lock_id": res.lock_id},
    )
    assert (err.code, err.status_code) == ("RESERVATION_EXPIRED", 410)
    assert await snapshot(pool) == before


# --- TTL (scenario 2) ----------------------------------------------------------------------------------


async def test_expired_hold_frees_the_slot_without_the_job(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    first = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    check = {"service_id": str(cat.service_id), "slot_id": str(slot)}
    avail = await call(app_ctx, "booking.availability.check", check)
    assert (avail.available, avail.reason, avail.remaining) == (False, "SLOT_FULL", 0)
    await expire_now(pool, first.id)
    # the job is not running: the database clock alone makes the unit free again
    avail = await call(app_ctx, "booking.availability.check", check)
    assert (avail.available, avail.remaining) == (True, 1)
    second = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    async with pool.acquire() as conn:
        statuses = dict(await conn.fetch("SELECT id, status FROM reservations"))
    assert statuses == {first.id: "expired", second.id: "pending"}
    assert (await slot_row(pool, slot))["booked_count"] == 1
    await assert_invariant(pool)
    # the job later finds nothing left: still exactly one reservation.expired for the first hold
    assert await expire_holds(app_ctx) == 0
    expired = await outbox(pool, "reservation.expired")
    assert [e["payload"]["reservation_id"] for e in expired] == [str(first.id)]


async def test_expired_holds_filling_a_slot_are_replaced_in_one_statement(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=2)
    lapsed = [await call(app_ctx, "booking.reservation.create", hold_body(cat, slot)) for _ in range(2)]
    assert (await slot_row(pool, slot))["status"] == "booked"
    for r in lapsed:
        await expire_now(pool, r.id)
    fresh = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    row = await slot_row(pool, slot)
    assert (row["booked_count"], row["status"]) == (1, "available")
    await assert_invariant(pool)
    expired = await outbox(pool, "reservation.expired")
    assert sorted(e["payload"]["reservation_id"] for e in expired) == sorted(str(r.id) for r in lapsed)
    created = await outbox(pool, "reservation.created")
    assert [e["payload"]["reservation_id"] for e in created][-1] == str(fresh.id)
    for e in [*expired, *created]:
        assert e["payload"]["event_id"] == str(e["id"])  # consumers deduplicate on it
    assert await validate_outbox(pool) == 5
    assert_models_own_json([*expired, *created])  # written in SQL, yet as the models write them


async def test_a_refused_hold_changes_nothing_not_even_expired_holds(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    lapsed = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    await expire_now(pool, lapsed.id)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE slots SET status = 'blocked' WHERE id = $1", slot)
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    assert (err.code, err.status_code) == ("SLOT_BLOCKED", 409)
    assert await snapshot(pool) == before  # the lapsed hold is the expiry job's to give back
    assert await outbox(pool, "reservation.expired") == []


async def test_already_held_rolls_back_the_whole_hold(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=3)
    user = uuid.uuid4()
    other = await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    await expire_now(pool, other.id)
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot, user))
    assert (err.code, err.status_code) == ("ALREADY_HELD", 409)
    # not even the expired hold was released: the statement is one transaction and it rolled back
    assert await snapshot(pool) == before


async def test_hold_ttl_from_settings(app_ctx: Context, pool: Pool) -> None:
    ctx = Context(
        pool=app_ctx.pool,
        sql=app_ctx.sql,
        settings=app_ctx.settings.model_copy(update={"hold_ttl_seconds": 2}),
    )
    cat = await make_service(ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    res = await call(ctx, "booking.reservation.create", hold_body(cat, slot))
    assert res.expires_at - res.created_at == dt.timedelta(seconds=2)
    await asyncio.sleep(2.1)
    # at/after the TTL on the database clock: bookable again, job stopped
    again = await call(ctx, "booking.reservation.create", hold_body(cat, slot))
    assert again.status == "pending"
    await assert_invariant(pool)


# --- the invariant with bookings -----------------------------------------------------------------------


async def test_existing_booking_counts(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=2)
    await insert_booking(pool, cat, slot)
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    assert err.code == "SLOT_FULL"
    await assert_invariant(pool)


# --- over real sockets (scenario 1) ---------------------------------------------------------------------


def _wire_error(exc: BaseException) -> tuple[str, int]:
    """(code, statusCode) of the structured error a failed `Client.send` carries."""
    assert isinstance(exc, RemoteError), repr(exc)
    return str(exc.code), int(exc.status_code or 0)


async def _send_all(clients: list[Any], bodies: list[dict[str, Any]]) -> list[Any]:
    """Every body sent at once, spread over the clients; errors returned as the exceptions raised."""
    return await asyncio.gather(
        *(clients[i % len(clients)].send("booking.reservation.create", b) for i, b in enumerate(bodies)),
        return_exceptions=True,
    )


@pytest.mark.parametrize(("existing", "expected_ok"), [(None, 3), ("hold", 2), ("booking", 2)])
async def test_200_concurrent_creates_over_sockets(
    app_ctx: Context,
    pool: Pool,
    app_server: Any,
    app_client: Client,
    existing: str | None,
    expected_ok: int,
) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=3)
    if existing == "hold":
        await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    elif existing == "booking":
        await insert_booking(pool, cat, slot)
    extra = [await Client.connect("127.0.0.1", app_server.port) for _ in range(3)]
    try:
        results = await _send_all([app_client, *extra], [hold_body(cat, slot) for _ in range(200)])
    finally:
        for c in extra:
            await c.close()
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [_wire_error(r) for r in results if isinstance(r, BaseException)]
    assert len(ok) == expected_ok
    assert failed == [("SLOT_FULL", 409)] * (200 - expected_ok)
    for r in ok:
        assert r["status"] == "pending" and r["slot_id"] == str(slot) and r["lock_id"]
    row = await slot_row(pool, slot)
    assert (row["booked_count"], row["status"]) == (3, "booked")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reservations WHERE status = 'pending'") == (
            3 if existing != "booking" else 2
        )
    assert len(await outbox(pool, "reservation.created")) == (3 if existing != "booking" else 2)
    await assert_invariant(pool)
