"""The consumed event `payment.status_changed`: the payment service tells us how a payment went.

Matched by `external_reference`. A payment only moves forward: pending (0) → processing (1) → success or
failed (2, final) → refunded (3). An event that would not move it forward — a duplicate, or one that
arrives after a later state (processing after success) — is ignored, so delivery may repeat and reorder.
Reaching a final state emits `payment.processed` and notifies the user.

A success for a booking that is already cancelled never revives the booking: the payment is marked
success, a full refund of the amount is recorded as pending (refund entry + `payment.refund_requested`),
and the user is told the money goes back. The cancel itself refunded nothing because nothing was paid yet.
"""

from __future__ import annotations

import asyncpg
import structlog

from booking_rpc.context import Context
from booking_rpc.events.outbox import enqueue
from booking_rpc.handlers.bookings import append_log, insert_entry, notify
from booking_rpc.models.bookings import PaymentStatusChanged
from booking_rpc.models.events import PaymentProcessed, PaymentRefundRequested
from booking_rpc.router import Router

log = structlog.get_logger(__name__)
router = Router()

RANK = {"pending": 0, "processing": 1, "success": 2, "failed": 2, "refunded": 3}
FINAL = frozenset({"success", "failed"})


@router.event("payment.status_changed")
async def on_payment_status_changed(payload: PaymentStatusChanged, ctx: Context) -> None:
    async with ctx.transaction() as conn:
        p = await conn.fetchrow(ctx.sql["payments.lock_by_reference"], payload.external_reference)
        if p is None:
            log.warning("payment.status_changed for an unknown payment", external_reference=payload.external_reference)
            return
        current, new = p["status"], payload.new_status
        if RANK[new] <= RANK.get(current, 0):
            log.info("payment event ignored (stale or duplicate)", payment_id=str(p["id"]), current=current, new=new)
            return
        row = await conn.fetchrow(ctx.sql["payments.set_status"], p["id"], new, payload.changed_at)
        assert row is not None
        booking_id = p["booking_id"]
        await append_log(
            conn,
            ctx,
            booking_id,
            "payment_status_changed",
            p["booking_status"],
            {"payment_status": current},
            {"payment_status": new, "external_reference": p["external_reference"]},
            None,
            None,
        )
        if new not in FINAL:
            return
        processed_at = row["paid_at"] if new == "success" else row["updated_at"]
        await enqueue(
            conn,
            ctx.sql,
            booking_id,
            PaymentProcessed(
                payment_id=p["id"],
                booking_id=booking_id,
                amount=p["amount"],
                currency=p["currency"],
                payment_method=p["payment_method"],
                status=new,
                processed_at=processed_at,
            ),
        )
        meta = {"booking_id": str(booking_id), "reference_code": p["reference_code"], "payment_status": new}
        if new == "success" and p["booking_status"] == "cancelled":
            await _refund_after_cancel(conn, ctx, p)
            return
        if new == "success":
            await notify(
                conn,
                ctx,
                p["user_id"],
                booking_id,
                "payment",
                "Payment received",
                f"We received your payment for booking {p['reference_code']}.",
                meta,
            )
        else:
            await notify(
                conn,
                ctx,
                p["user_id"],
                booking_id,
                "payment",
                "Payment failed",
                f"The payment for booking {p['reference_code']} failed.",
                meta,
            )


async def _refund_after_cancel(conn: asyncpg.Connection, ctx: Context, p: asyncpg.Record) -> None:
    rec = await conn.fetchrow(ctx.sql["payments.record_refund"], p["id"], p["amount"])
    assert rec is not None
    booking_id = p["booking_id"]
    if p["amount"] > 0:
        await insert_entry(conn, ctx, booking_id, p["clinic_id"], "refund", p["amount"], p["external_reference"])
        await enqueue(
            conn,
            ctx.sql,
            booking_id,
            PaymentRefundRequested(
                payment_id=p["id"],
                booking_id=booking_id,
                external_reference=p["external_reference"],
                refund_amount=p["amount"],
                currency=p["currency"],
                reason="payment succeeded after the booking was cancelled",
                requested_at=rec["refunded_at"],
            ),
        )
    await append_log(
        conn,
        ctx,
        booking_id,
        "refund_requested",
        "cancelled",
        None,
        {"refund_amount": str(p["amount"]), "refund_status": rec["refund_status"]},
        None,
        "payment succeeded after cancellation; refunded in full",
    )
    await notify(
        conn,
        ctx,
        p["user_id"],
        booking_id,
        "payment",
        "Refund on its way",
        f"Your payment for the cancelled booking {p['reference_code']} will be refunded in full.",
        {"booking_id": str(booking_id), "refund_amount": str(p["amount"])},
    )
