"""payment.status_changed: forward-only, idempotent, order-safe; payment.processed on a final state."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import admin, book, call, call_err, fetch, fetchrow, outbox, staff, user_actor, validate_outbox


def event(ref: str, new: str, prev: str | None = None) -> dict[str, Any]:
    return {
        "event_type": "payment.status_changed",
        "payment_id": str(uuid.uuid4()),
        "external_reference": ref,
        "previous_status": prev,
        "new_status": new,
        "changed_at": "2030-01-01T10:00:00Z",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2030-01-01T10:00:00Z",
    }


async def pay_status(pool: Pool, ref: str) -> str:
    return str((await fetchrow(pool, "SELECT status FROM payments WHERE external_reference = $1", ref))["status"])


def refund_event(ref: str, refund: str | None, new: str = "success") -> dict[str, Any]:
    body = event(ref, new, "success")
    if refund is not None:
        body["refund_status"] = refund
    return body


async def cancel_paid(app_ctx: Context, pool: Pool, status: str = "success") -> tuple[Any, str]:
    """A booking paid (or still `pending` payment), cancelled by its owner days ahead: a full refund."""
    ref = f"ext-{uuid.uuid4()}"
    b = await book(app_ctx, pool, payment={"method": "card", "external_reference": ref, "status": status})
    await call(
        app_ctx,
        "booking.booking.cancel",
        {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "plans changed"},
    )
    return b, ref


async def refund_row(pool: Pool, ref: str) -> Any:
    return await fetchrow(
        pool,
        "SELECT status, refund_status, refund_amount, refunded_at FROM payments WHERE external_reference = $1",
        ref,
    )


async def test_forward_only_and_idempotent(app_ctx: Context, pool: Pool) -> None:
    ref = f"ext-{uuid.uuid4()}"
    await book(app_ctx, pool, payment={"method": "va", "external_reference": ref, "status": "pending"})
    await call(app_ctx, "payment.status_changed", event(ref, "processing", "pending"))
    assert await pay_status(pool, ref) == "processing"
    await call(app_ctx, "payment.status_changed", event(ref, "success", "processing"))
    await call(app_ctx, "payment.status_changed", event(ref, "success", "processing"))  # duplicate
    await call(app_ctx, "payment.status_changed", event(ref, "processing", "pending"))  # late, out of order
    await call(app_ctx, "payment.status_changed", event(ref, "failed", "processing"))  # other final: ignored
    assert await pay_status(pool, ref) == "success"
    processed = await outbox(pool, "payment.processed")
    assert len(processed) == 1 and processed[0]["payload"]["status"] == "success"
    p = await fetchrow(pool, "SELECT paid_at FROM payments WHERE external_reference = $1", ref)
    assert p["paid_at"] is not None
    await validate_outbox(pool)


async def test_failed_and_unknown(app_ctx: Context, pool: Pool) -> None:
    ref = f"ext-{uuid.uuid4()}"
    b = await book(app_ctx, pool, payment={"method": "va", "external_reference": ref, "status": "pending"})
    await call(app_ctx, "payment.status_changed", event(ref, "failed"))
    assert await pay_status(pool, ref) == "failed"
    ev = await outbox(pool, "payment.processed")
    assert len(ev) == 1 and ev[0]["payload"]["status"] == "failed"
    n = await fetch(pool, "SELECT * FROM notifications WHERE booking_id = $1 AND type = 'payment'", b.booking.id)
    assert len(n) == 1
    await call(app_ctx, "payment.status_changed", event("nobody-knows", "success"))  # ignored, no error


async def test_success_after_cancel_refunds_never_rebooks(app_ctx: Context, pool: Pool) -> None:
    b, ref = await cancel_paid(app_ctx, pool, "pending")
    await call(app_ctx, "payment.status_changed", event(ref, "success"))
    row = await fetchrow(pool, "SELECT * FROM payments WHERE external_reference = $1", ref)
    assert row["status"] == "success" and row["refund_status"] == "pending"
    assert row["refund_amount"] == row["amount"] == Decimal("150000.00")
    bk = await fetchrow(pool, "SELECT status FROM bookings WHERE id = $1", b.booking.id)
    assert bk["status"] == "cancelled"
    s = await fetchrow(pool, "SELECT booked_count FROM slots WHERE id = $1", b.slot)
    assert s["booked_count"] == 0
    assert len(await outbox(pool, "payment.refund_requested")) == 1
    fe = await fetch(pool, "SELECT type FROM financial_entries WHERE booking_id = $1 ORDER BY type", b.booking.id)
    assert [r["type"] for r in fe] == ["booking_payment", "refund"]
    await call(app_ctx, "payment.status_changed", event(ref, "success"))  # again: nothing more
    assert len(await outbox(pool, "payment.refund_requested")) == 1
    await call(app_ctx, "payment.status_changed", event(ref, "refunded", "success"))
    row = await fetchrow(pool, "SELECT * FROM payments WHERE external_reference = $1", ref)
    assert (row["status"], row["refund_status"]) == ("refunded", "completed")
    await validate_outbox(pool)


async def test_over_the_socket_event(app_ctx: Context, pool: Pool, app_client: Any) -> None:
    import asyncio

    ref = f"ext-{uuid.uuid4()}"
    await book(app_ctx, pool, payment={"method": "va", "external_reference": ref, "status": "pending"})
    await app_client.emit("payment.status_changed", event(ref, "success"))
    for _ in range(100):
        if await pay_status(pool, ref) == "success":
            break
        await asyncio.sleep(0.02)
    assert await pay_status(pool, ref) == "success"


async def test_refund_goes_pending_processing_completed_forward_only(app_ctx: Context, pool: Pool) -> None:
    b, ref = await cancel_paid(app_ctx, pool)
    row = await refund_row(pool, ref)
    assert (row["refund_status"], row["refunded_at"]) == ("pending", None)
    await call(app_ctx, "payment.status_changed", refund_event(ref, "processing"))
    await call(app_ctx, "payment.status_changed", refund_event(ref, "processing"))  # duplicate
    row = await refund_row(pool, ref)
    assert (row["refund_status"], row["refunded_at"]) == ("processing", None)
    assert await outbox(pool, "payment.refund_processed") == []
    await call(app_ctx, "payment.status_changed", refund_event(ref, None, new="refunded"))  # 'refunded' = completed
    await call(app_ctx, "payment.status_changed", refund_event(ref, "processing"))  # late: ignored
    await call(app_ctx, "payment.status_changed", refund_event(ref, "failed"))  # other final: ignored
    row = await refund_row(pool, ref)
    assert (row["status"], row["refund_status"]) == ("refunded", "completed")
    assert row["refunded_at"] is not None
    done = await outbox(pool, "payment.refund_processed")
    assert len(done) == 1
    assert done[0]["payload"]["refund_status"] == "completed"
    assert done[0]["payload"]["refund_amount"] == str(row["refund_amount"])
    trail = await fetch(
        pool,
        """SELECT e.new_state FROM booking_log_entries e JOIN booking_logs l ON l.id = e.log_id
           WHERE l.booking_id = $1 AND e.action = 'refund_status_changed' ORDER BY e.created_at, e.id""",
        b.booking.id,
    )
    assert [t["new_state"]["refund_status"] for t in trail] == ["processing", "completed"]
    await validate_outbox(pool)


async def test_refund_out_of_order_final_first_and_failed_found_by_staff(app_ctx: Context, pool: Pool) -> None:
    b, ref = await cancel_paid(app_ctx, pool)
    other, _ = await cancel_paid(app_ctx, pool)
    await call(app_ctx, "payment.status_changed", refund_event(ref, "failed"))
    await call(app_ctx, "payment.status_changed", refund_event(ref, "processing"))  # arrives after the final one
    row = await refund_row(pool, ref)
    assert (row["status"], row["refund_status"], row["refunded_at"]) == ("success", "failed", None)
    ev = await outbox(pool, "payment.refund_processed")
    assert [e["payload"]["refund_status"] for e in ev] == ["failed"]
    clinic_staff = staff(b.cat.clinic_id)
    page = await call(app_ctx, "booking.payments.find", {"actor": clinic_staff, "refund_status": ["failed"]})
    assert [(p.booking_id, p.refund_status) for p in page.items] == [(b.booking.id, "failed")]
    assert page.items[0].reference_code == b.booking.reference_code
    # the other clinic's pending refund is not in this clinic's list, and is in the admin's
    pending = await call(app_ctx, "booking.payments.find", {"actor": clinic_staff, "refund_status": ["pending"]})
    assert pending.items == []
    everyone = await call(app_ctx, "booking.payments.find", {"actor": admin(), "refund_status": ["pending"]})
    assert [p.booking_id for p in everyone.items] == [other.booking.id]
    err = await call_err(app_ctx, "booking.payments.find", {"actor": user_actor(b.user)})
    assert err.code == "FORBIDDEN"
    err = await call_err(
        app_ctx, "booking.payments.find", {"actor": clinic_staff, "clinic_id": str(other.cat.clinic_id)}
    )
    assert err.code == "FORBIDDEN"
    await validate_outbox(pool)


async def test_payments_find_pages(app_ctx: Context, pool: Pool) -> None:
    made = [await cancel_paid(app_ctx, pool) for _ in range(3)]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        body: dict[str, Any] = {"actor": admin(), "refund_status": ["pending"], "limit": 2}
        if cursor:
            body["cursor"] = cursor
        page = await call(app_ctx, "booking.payments.find", body)
        seen += [p.booking_id for p in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(b.booking.id for b, _ in made)
