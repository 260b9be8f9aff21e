"""booking.reservation.confirm: hold -> booking in one transaction, idempotent, race-safe, all rows written."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from booking_rpc.client import Client
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.domain import reference_codes
from booking_rpc.errors import RpcError
from tests.helpers import (
    admin,
    assert_invariant,
    book,
    call,
    call_err,
    confirm_body,
    fetch,
    fetchrow,
    hold,
    make_service,
    make_slot,
    outbox,
    staff,
    user_actor,
    validate_outbox,
)


async def snapshot(pool: Pool) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with pool.acquire() as conn:
        for t in (
            "slots",
            "reservations",
            "bookings",
            "payments",
            "financial_entries",
            "booking_reminders",
            "booking_logs",
            "booking_log_entries",
            "notifications",
            "booking_events_outbox",
        ):
            out[t] = [dict(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY id")]
    return out


async def test_confirm_writes_everything(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, price="150000.00", duration_minutes=30)
    pet = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO pets (id, name, species, breed, updated_at) VALUES ($1,'Rex','dog',NULL,now())", pet
        )
        await conn.execute("INSERT INTO clinics (id, name, updated_at) VALUES ($1, 'Happy Paws', now())", cat.clinic_id)
    slot = await make_slot(pool, cat.service_id, capacity=2, starts_in=dt.timedelta(days=3))
    user = uuid.uuid4()
    res = await hold(app_ctx, cat, slot, user, pet)
    pay = {"method": "card", "external_reference": "pay-1", "status": "success"}
    b = await call(app_ctx, "booking.reservation.confirm", confirm_body(res, payment=pay, notes="first visit"))
    assert b.status == "confirmed" and b.amount == Decimal("150000.00")
    assert reference_codes.is_valid(b.reference_code)
    assert b.pet_snapshot == {"id": str(pet), "name": "Rex", "species": "dog", "breed": None}
    assert b.service_snapshot == {
        "id": str(cat.service_id),
        "name": "Vaccination",
        "price": "150000.00",
        "duration_minutes": 30,
        "clinic_id": str(cat.clinic_id),
        "clinic_name": "Happy Paws",
    }
    s = await fetchrow(pool, "SELECT * FROM slots WHERE id = $1", slot)
    assert b.booking_time == s["starts_at"]
    assert s["booked_count"] == 1  # the unit moved from the hold to the booking
    r = await fetchrow(pool, "SELECT * FROM reservations WHERE id = $1", res.id)
    assert r["status"] == "confirmed" and r["confirmed_at"] is not None
    assert b.payment is not None and b.payment.status == "success" and b.payment.amount == Decimal("150000.00")
    assert b.payment.currency == "IDR" and b.payment.id == b.payment_id and b.payment.external_reference == "pay-1"
    fe = await fetch(pool, "SELECT * FROM financial_entries WHERE booking_id = $1", b.id)
    assert len(fe) == 1 and fe[0]["type"] == "booking_payment" and fe[0]["status"] == "pending"
    assert (fe[0]["platform_fee"], fe[0]["tax_amount"], fe[0]["clinic_amount"]) == (
        Decimal("15000.00"),
        Decimal("16500.00"),
        Decimal("118500.00"),
    )
    rem = await fetch(pool, "SELECT reminder_type, scheduled_time FROM booking_reminders WHERE booking_id = $1", b.id)
    kinds = {x["reminder_type"]: x["scheduled_time"] for x in rem}
    assert set(kinds) == {"upcoming", "check_in", "follow_up", "review_request"}
    assert kinds["upcoming"] == s["starts_at"] - dt.timedelta(hours=24)
    assert kinds["check_in"] == s["starts_at"]
    assert kinds["review_request"] > s["ends_at"] and kinds["follow_up"] > s["ends_at"]
    log = await fetch(
        pool,
        """SELECT e.* FROM booking_log_entries e JOIN booking_logs l ON l.id = e.log_id
                               WHERE l.booking_id = $1""",
        b.id,
    )
    assert len(log) == 1 and log[0]["action"] == "created" and log[0]["performed_by"] == user
    assert log[0]["notes"] == "first visit"
    notes = await fetch(pool, "SELECT * FROM notifications WHERE booking_id = $1", b.id)
    assert [n["type"] for n in notes] == ["booking_confirmed"] and notes[0]["user_id"] == user
    types = [e["event_type"] for e in await outbox(pool) if e["aggregate_id"] == b.id]
    assert types == ["booking.created", "booking.confirmed", "payment.processed"]
    confirmed = (await outbox(pool, "booking.confirmed"))[0]["payload"]
    assert confirmed["amount"] == "150000.00" and confirmed["reference_code"] == b.reference_code
    assert confirmed["slot_date"] == s["slot_date"].isoformat()
    assert await validate_outbox(pool) >= 4
    await assert_invariant(pool)


async def test_pending_payment_and_no_payment(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, payment={"method": "va", "external_reference": "x1", "status": "pending"})
    assert b.booking.payment is not None and b.booking.payment.status == "pending"
    assert b.booking.payment.paid_at is None
    assert await outbox(pool, "payment.processed") == []
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await hold(app_ctx, cat, slot, uuid.uuid4())
    bare = await call(app_ctx, "booking.reservation.confirm", confirm_body(res))
    assert bare.payment is not None and bare.payment.payment_method == "unspecified"


async def test_only_future_reminders(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, starts_in=dt.timedelta(hours=5))
    rem = await fetch(pool, "SELECT reminder_type FROM booking_reminders WHERE booking_id = $1", b.booking.id)
    assert {r["reminder_type"] for r in rem} == {"check_in", "follow_up", "review_request"}


async def test_confirm_is_idempotent(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await hold(app_ctx, cat, slot, uuid.uuid4())
    first = await call(app_ctx, "booking.reservation.confirm", confirm_body(res))
    before = await snapshot(pool)
    again = await call(app_ctx, "booking.reservation.confirm", confirm_body(res))
    assert again.id == first.id and again.reference_code == first.reference_code
    assert await snapshot(pool) == before


async def test_concurrent_confirms_make_one_booking(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await hold(app_ctx, cat, slot, uuid.uuid4())
    results = await asyncio.gather(
        *(call(app_ctx, "booking.reservation.confirm", confirm_body(res)) for _ in range(10))
    )
    assert len({r.id for r in results}) == 1
    assert len(await fetch(pool, "SELECT id FROM bookings")) == 1
    assert len(await fetch(pool, "SELECT id FROM payments")) == 1
    assert len(await outbox(pool, "booking.confirmed")) == 1
    await assert_invariant(pool)


async def test_two_confirms_over_sockets(app_ctx: Context, pool: Pool, app_server: Any, app_client: Client) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await hold(app_ctx, cat, slot, uuid.uuid4())
    other = await Client.connect("127.0.0.1", app_server.port)
    try:
        a, b = await asyncio.gather(
            app_client.send("booking.reservation.confirm", confirm_body(res)),
            other.send("booking.reservation.confirm", confirm_body(res)),
        )
    finally:
        await other.close()
    assert a["id"] == b["id"] and a["amount"] == "150000.00"
    assert len(await fetch(pool, "SELECT id FROM bookings")) == 1
    await assert_invariant(pool)


async def test_confirm_racing_expiry(app_ctx: Context, pool: Pool) -> None:
    """Expiry set to 'about now' while confirms run: either a booking or RESERVATION_EXPIRED, never both."""
    from booking_rpc.jobs.expiry import expire_holds

    for _ in range(5):
        cat = await make_service(app_ctx)
        slot = await make_slot(pool, cat.service_id)
        res = await hold(app_ctx, cat, slot, uuid.uuid4())
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE reservations SET expires_at = now() + interval '20 milliseconds' WHERE id = $1", res.id
            )
        await asyncio.sleep(0.015)
        results = await asyncio.gather(
            call(app_ctx, "booking.reservation.confirm", confirm_body(res)),
            expire_holds(app_ctx),
            return_exceptions=True,
        )
        outcome = results[0]
        r = await fetchrow(pool, "SELECT status FROM reservations WHERE id = $1", res.id)
        bookings = await fetch(pool, "SELECT id FROM bookings WHERE reservation_id = $1", res.id)
        if isinstance(outcome, RpcError):
            assert outcome.code == "RESERVATION_EXPIRED"
            assert bookings == []
            assert r["status"] in ("pending", "expired")
        else:
            assert r["status"] == "confirmed" and len(bookings) == 1
        await expire_holds(app_ctx)
        await assert_invariant(pool)


async def test_expired_and_mismatch_write_nothing(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    user = uuid.uuid4()
    res = await hold(app_ctx, cat, slot, user)
    before = await snapshot(pool)
    cases: list[tuple[dict[str, Any], str, int]] = [
        ({**confirm_body(res), "lock_id": "nope"}, "LOCK_MISMATCH", 409),
        ({**confirm_body(res), "actor": user_actor(uuid.uuid4())}, "FORBIDDEN", 403),
        ({**confirm_body(res), "user_id": str(uuid.uuid4()), "actor": admin()}, "NOT_FOUND", 404),
        ({**confirm_body(res), "actor": staff(cat.clinic_id)}, "FORBIDDEN", 403),
        ({**confirm_body(res), "actor": None}, "UNAUTHENTICATED", 401),
        ({**confirm_body(res), "reservation_id": str(uuid.uuid4())}, "NOT_FOUND", 404),
        ({**confirm_body(res), "payment": {"method": "card", "status": "weird"}}, "VALIDATION_FAILED", 400),
    ]
    for body, code, status in cases:
        err = await call_err(app_ctx, "booking.reservation.confirm", body)
        assert (err.code, err.status_code) == (code, status), (code, err)
        assert await snapshot(pool) == before
    async with pool.acquire() as conn:
        await conn.execute("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1", res.id)
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.reservation.confirm", confirm_body(res))
    assert (err.code, err.status_code) == ("RESERVATION_EXPIRED", 410)
    assert await snapshot(pool) == before
    # the hold is intact after a LOCK_MISMATCH: a fresh one still confirms
    res2 = await hold(app_ctx, cat, await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=4)), user)
    await call_err(app_ctx, "booking.reservation.confirm", {**confirm_body(res2), "lock_id": "bad"})
    ok = await call(app_ctx, "booking.reservation.confirm", confirm_body(res2))
    assert ok.status == "confirmed"


async def test_admin_confirms_for_user(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id)
    res = await hold(app_ctx, cat, slot, uuid.uuid4())
    b = await call(app_ctx, "booking.reservation.confirm", {**confirm_body(res), "actor": admin()})
    assert b.user_id == res.user_id


async def test_reference_code_collision_is_retried(
    app_ctx: Context, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await book(app_ctx, pool)
    codes = iter([first.booking.reference_code, first.booking.reference_code, "BK-2345-6789"])
    monkeypatch.setattr("booking_rpc.handlers.reservations_confirm.new_reference_code", lambda: next(codes))
    second = await book(app_ctx, pool)
    assert second.booking.reference_code == "BK-2345-6789"


async def test_requires_approval_flow(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, requires_approval=True)
    assert b.booking.status == "pending_approval"
    assert await outbox(pool, "booking.confirmed") == []
    assert await fetch(pool, "SELECT id FROM booking_reminders") == []
    r = await fetchrow(pool, "SELECT status FROM reservations WHERE id = $1", b.booking.reservation_id)
    assert r["status"] == "confirmed"  # the hold can no longer expire
    body = {"actor": user_actor(b.user), "booking_id": str(b.booking.id)}
    assert (await call_err(app_ctx, "booking.booking.approve", body)).code == "FORBIDDEN"
    assert (await call_err(app_ctx, "booking.booking.approve", {**body, "actor": staff(uuid.uuid4())})).code == (
        "NOT_FOUND"
    )
    ok = await call(app_ctx, "booking.booking.approve", {**body, "actor": staff(b.cat.clinic_id)})
    assert ok.status == "confirmed"
    assert len(await outbox(pool, "booking.confirmed")) == 1
    assert len(await fetch(pool, "SELECT id FROM booking_reminders")) == 4
    # reject of another pending booking: full refund even late, capacity back
    late = await book(app_ctx, pool, cat=b.cat, starts_in=dt.timedelta(hours=2))
    assert late.booking.status == "pending_approval"
    rej = await call(
        app_ctx,
        "booking.booking.reject",
        {"actor": staff(b.cat.clinic_id), "booking_id": str(late.booking.id), "reason": "no vet"},
    )
    assert rej.status == "cancelled" and rej.payment is not None
    assert rej.payment.refund_amount == rej.payment.amount and rej.payment.refund_status == "pending"
    s = await fetchrow(pool, "SELECT booked_count FROM slots WHERE id = $1", late.slot)
    assert s["booked_count"] == 0
    err = await call_err(
        app_ctx, "booking.booking.approve", {"actor": staff(b.cat.clinic_id), "booking_id": str(late.booking.id)}
    )
    assert err.code == "ILLEGAL_TRANSITION"
    await validate_outbox(pool)
    await assert_invariant(pool)
