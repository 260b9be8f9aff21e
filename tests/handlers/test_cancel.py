"""booking.booking.cancel: refund tiers, capacity once, reminders, money reversal, events, authorization."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import (
    admin,
    assert_invariant,
    book,
    call,
    call_err,
    fetch,
    fetchrow,
    outbox,
    set_status,
    shift_slot,
    staff,
    user_actor,
    validate_outbox,
)


def body(b: Any, actor: dict[str, Any], reason: str = "sick pet") -> dict[str, Any]:
    return {"actor": actor, "booking_id": str(b.booking.id), "reason": reason}


@pytest.mark.parametrize(
    ("starts_in", "expected"),
    [
        (dt.timedelta(days=3), Decimal("150000.00")),  # >= 24 h: full
        (dt.timedelta(hours=24, minutes=5), Decimal("150000.00")),
        (dt.timedelta(hours=23), Decimal("75000.00")),  # later: 50 %
        (dt.timedelta(minutes=10), Decimal("75000.00")),
        (dt.timedelta(minutes=-10), Decimal("0.00")),  # started: nothing
    ],
)
async def test_refund_tiers(app_ctx: Context, pool: Pool, starts_in: dt.timedelta, expected: Decimal) -> None:
    b = await book(app_ctx, pool)
    await shift_slot(pool, b.slot, starts_in)
    if starts_in < dt.timedelta(0):
        await set_status(app_ctx, b, "in-progress")
    out = await call(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user)))
    assert out.status == "cancelled" and out.cancellation_reason == "sick pet"
    assert out.payment is not None
    assert out.payment.refund_amount == expected
    assert out.payment.refund_amount <= out.payment.amount
    assert out.payment.refund_status == ("pending" if expected > 0 else None)
    assert out.payment.refunded_at is None  # requested, not paid out: set when the refund completes
    s = await fetchrow(pool, "SELECT booked_count, status FROM slots WHERE id = $1", b.slot)
    assert (s["booked_count"], s["status"]) == (0, "available")
    rem = await fetch(pool, "SELECT status FROM booking_reminders WHERE booking_id = $1", b.booking.id)
    assert all(r["status"] == "cancelled" for r in rem)
    fe = {
        r["type"]: r for r in await fetch(pool, "SELECT * FROM financial_entries WHERE booking_id = $1", b.booking.id)
    }
    assert fe["booking_payment"]["status"] == "reversed"
    if expected > 0:
        assert fe["refund"]["total_amount"] == expected
    else:
        assert "refund" not in fe
    ev = await outbox(pool, "booking.cancelled")
    assert len(ev) == 1
    assert ev[0]["payload"]["refund_amount"] == str(expected)
    assert ev[0]["payload"]["refund_status"] == ("pending" if expected > 0 else None)
    assert ev[0]["payload"]["cancellation_reason"] == "sick pet"
    log = await fetch(
        pool,
        """SELECT e.* FROM booking_log_entries e JOIN booking_logs l ON l.id = e.log_id
                               WHERE l.booking_id = $1 AND e.action = 'cancelled'""",
        b.booking.id,
    )
    assert len(log) == 1 and log[0]["notes"] == "sick pet" and log[0]["performed_by"] == b.user
    await validate_outbox(pool)
    await assert_invariant(pool)


async def test_unpaid_booking_refunds_nothing(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, payment={"method": "va", "external_reference": "u1", "status": "pending"})
    out = await call(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user)))
    assert out.payment is not None and out.payment.refund_amount == Decimal("0.00")


async def test_double_cancel_returns_capacity_once(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, capacity=2)
    results = await asyncio.gather(
        *(call(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user))) for _ in range(5))
    )
    assert {r.status for r in results} == {"cancelled"}
    s = await fetchrow(pool, "SELECT booked_count FROM slots WHERE id = $1", b.slot)
    assert s["booked_count"] == 0
    assert len(await outbox(pool, "booking.cancelled")) == 1
    await assert_invariant(pool)


async def test_cancel_authorization(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    assert (await call_err(app_ctx, "booking.booking.cancel", body(b, user_actor(uuid.uuid4())))).code == "NOT_FOUND"
    assert (await call_err(app_ctx, "booking.booking.cancel", body(b, staff(uuid.uuid4())))).code == "NOT_FOUND"
    assert (await call_err(app_ctx, "booking.booking.cancel", {**body(b, admin()), "reason": ""})).code == (
        "VALIDATION_FAILED"
    )
    assert (await call_err(app_ctx, "booking.booking.cancel", {**body(b, admin()), "reason": "   "})).code == (
        "VALIDATION_FAILED"
    )
    no_reason = {"actor": admin(), "booking_id": str(b.booking.id)}
    assert (await call_err(app_ctx, "booking.booking.cancel", no_reason)).code == "VALIDATION_FAILED"
    assert (await call_err(app_ctx, "booking.booking.cancel", {**body(b, admin()), "actor": None})).code == (
        "UNAUTHENTICATED"
    )
    out = await call(app_ctx, "booking.booking.cancel", body(b, staff(b.cat.clinic_id), "vet ill"))
    assert out.status == "cancelled"
    b2 = await book(app_ctx, pool)
    assert (await call(app_ctx, "booking.booking.cancel", body(b2, admin()))).status == "cancelled"


async def test_cannot_cancel_finished(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    await shift_slot(pool, b.slot, dt.timedelta(minutes=-5))
    await set_status(app_ctx, b, "in-progress")
    await set_status(app_ctx, b, "completed")
    err = await call_err(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user)))
    assert (err.code, err.status_code) == ("ILLEGAL_TRANSITION", 409)
    assert "completed" in err.message and "cancelled" in err.message


@pytest.mark.parametrize("pattern", ["booking.booking.cancel", "booking.booking.reject"])
async def test_cancel_and_reject_refuse_the_same_reasons(app_ctx: Context, pool: Pool, pattern: str) -> None:
    """One rule for why a booking ends: required, 1-2000 characters, not blank; a refusal changes nothing."""
    b = await book(app_ctx, pool, requires_approval=True)
    target = {"actor": admin(), "booking_id": str(b.booking.id)}
    for reason in ("", "   ", "\n\t", "x" * 2001):
        err = await call_err(app_ctx, pattern, {**target, "reason": reason})
        assert (err.code, err.status_code) == ("VALIDATION_FAILED", 400), reason
    assert (await call_err(app_ctx, pattern, target)).code == "VALIDATION_FAILED"
    row = await fetchrow(pool, "SELECT status FROM bookings WHERE id = $1", b.booking.id)
    assert row["status"] == "pending_approval"
    out = await call(app_ctx, pattern, {**target, "reason": "  no vet today "})
    assert (out.status, out.cancellation_reason) == ("cancelled", "no vet today")
    await assert_invariant(pool)


async def test_cancel_cutoff_binds_the_owner_not_staff(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool, cancel_cutoff_hours=12)
    await shift_slot(pool, b.slot, dt.timedelta(hours=6))
    err = await call_err(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user)))
    assert (err.code, err.status_code) == ("CANCEL_NOT_ALLOWED", 409)
    assert "12 hours" in err.message
    row = await fetchrow(pool, "SELECT status FROM bookings WHERE id = $1", b.booking.id)
    assert row["status"] == "confirmed"
    out = await call(app_ctx, "booking.booking.cancel", body(b, staff(b.cat.clinic_id)))
    assert out.status == "cancelled"
    assert out.payment is not None and out.payment.refund_amount == Decimal("75000.00")  # the policy still applies
    await assert_invariant(pool)


async def test_a_refund_owed_is_requested_from_the_payment_service(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    out = await call(app_ctx, "booking.booking.cancel", body(b, user_actor(b.user)))
    assert out.payment is not None
    ev = await outbox(pool, "payment.refund_requested")
    assert len(ev) == 1
    p = ev[0]["payload"]
    assert (p["booking_id"], p["payment_id"]) == (str(b.booking.id), str(out.payment.id))
    assert p["refund_amount"] == str(out.payment.refund_amount) == "150000.00"
    assert p["reason"] == "sick pet"
    await validate_outbox(pool)
