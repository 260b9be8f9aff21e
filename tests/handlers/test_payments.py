"""payment.status_changed: forward-only, idempotent, order-safe; payment.processed on a final state."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import book, call, fetch, fetchrow, outbox, user_actor, validate_outbox


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
    ref = f"ext-{uuid.uuid4()}"
    b = await book(app_ctx, pool, payment={"method": "va", "external_reference": ref, "status": "pending"})
    await call(
        app_ctx,
        "booking.booking.cancel",
        {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "plans changed"},
    )
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
