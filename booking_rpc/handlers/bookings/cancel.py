"""`booking.booking.cancel` (owner or staff; the refund policy) and `booking.booking.reject` (staff; a full
refund of a booking awaiting approval): one path, `cancel_locked`.

An owner may not cancel closer to the start than the service's `cancel_cutoff_hours` (CANCEL_NOT_ALLOWED);
staff may. A refund owed is recorded `pending` and `payment.refund_requested` asks the payment service to
pay it out (its payment.status_changed events complete it). The freed unit goes to the slot's first waiter.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from booking_rpc.context import Context
from booking_rpc.domain.booking_states import check_transition
from booking_rpc.domain.changes import cancel_refusal
from booking_rpc.domain.refunds import Refund, refund_for
from booking_rpc.errors import RpcError
from booking_rpc.handlers.bookings.access import can_manage, changing
from booking_rpc.handlers.bookings.rows import load_booking, notify_owner, publish
from booking_rpc.handlers.effects import append_log, insert_entry
from booking_rpc.jobs.offers import offer_freed
from booking_rpc.models.bookings import BookingCancelRequest, BookingOut, BookingRejectRequest
from booking_rpc.models.common import Actor
from booking_rpc.models.events import BookingCancelled, PaymentRefundRequested
from booking_rpc.router import Router

router = Router()


async def cancel_locked(
    conn: asyncpg.Connection,
    ctx: Context,
    b: asyncpg.Record,
    actor: Actor,
    reason: str,
    action: str,
    *,
    full_refund: bool,
) -> None:
    """Cancel a locked, cancellable booking: refund, capacity, reminders, money, event, log, notice."""
    check_transition(b["status"], "cancelled", action)
    payment = await conn.fetchrow(ctx.sql["payments.lock_for_booking"], b["id"])
    paid = payment["amount"] if payment is not None and payment["status"] == "success" else Decimal("0.00")
    if full_refund:
        refund = Refund(Decimal(100), paid, "full")
    else:
        s = ctx.settings
        refund = refund_for(
            paid,
            b["starts_at"],
            b["db_now"],
            full_refund_hours=s.full_refund_hours,
            late_refund_percent=s.late_refund_percent,
        )
    changed = await conn.fetchrow(ctx.sql["bookings.set_status"], b["id"], "cancelled", reason)
    assert changed is not None
    # every cancellable status holds one unit: give it back (exactly once: a cancelled booking never gets
    # here), to the slot's first waiter if anyone waits
    await conn.execute(ctx.sql["slots.release_unit"], b["slot_id"], 1)
    await offer_freed(conn, ctx, b["slot_id"])
    refund_status: str | None = None
    if payment is not None:
        rec = await conn.fetchrow(ctx.sql["payments.record_refund"], payment["id"], refund.amount)
        assert rec is not None
        refund_status = rec["refund_status"]
        if refund.amount > 0:  # the payment service pays it out and reports back (payment.status_changed)
            await publish(
                conn,
                ctx,
                b,
                PaymentRefundRequested,
                payment_id=payment["id"],
                external_reference=payment["external_reference"],
                refund_amount=refund.amount,
                currency=payment["currency"],
                reason=reason,
                requested_at=rec["updated_at"],
            )
    await conn.execute(ctx.sql["bookings.cancel_reminders"], b["id"], None)
    await conn.execute(ctx.sql["bookings.reverse_entry"], b["id"])
    if refund.amount > 0:
        ref = payment["external_reference"] if payment is not None else None
        await insert_entry(conn, ctx, b["id"], b["clinic_id"], "refund", refund.amount, ref)
    await publish(
        conn,
        ctx,
        b,
        BookingCancelled,
        cancellation_reason=reason,
        refund_amount=refund.amount,
        refund_status=refund_status,
        cancelled_at=changed["updated_at"],
    )
    await append_log(
        conn,
        ctx,
        b["id"],
        "cancelled" if action == "cancel" else "rejected",
        "cancelled",
        {"status": b["status"]},
        {
            "status": "cancelled",
            "refund_amount": str(refund.amount),
            "refund_percent": str(refund.percent),
            "refund_tier": refund.tier,
            "refund_status": refund_status,
        },
        actor,
        reason,
    )
    title = "Booking cancelled" if action == "cancel" else "Booking request declined"
    await notify_owner(
        conn,
        ctx,
        b,
        "booking_cancelled",
        title,
        f"Your booking {b['reference_code']} was cancelled. Refund: {refund.amount} {ctx.settings.currency}.",
        refund_amount=str(refund.amount),
    )


@router.message("booking.booking.cancel")
async def cancel_booking(payload: BookingCancelRequest, ctx: Context) -> BookingOut:
    async with changing(ctx, payload.actor, payload.booking_id) as (conn, b, actor):
        if b["status"] == "cancelled":
            return await load_booking(conn, ctx, b["id"])  # a double cancel is idempotent
        why = cancel_refusal(
            b["starts_at"],
            b["db_now"],
            cutoff_hours=b["cancel_cutoff_hours"],
            by_staff=can_manage(actor, b["clinic_id"]),
        )
        if why is not None:
            raise RpcError("CANCEL_NOT_ALLOWED", f"The booking cannot be cancelled: {why}", {"reason": why})
        await cancel_locked(conn, ctx, b, actor, payload.reason.strip(), "cancel", full_refund=False)
        return await load_booking(conn, ctx, b["id"])


@router.message("booking.booking.reject")
async def reject_booking(payload: BookingRejectRequest, ctx: Context) -> BookingOut:
    async with changing(ctx, payload.actor, payload.booking_id, manage="reject a booking") as (conn, b, actor):
        if b["status"] == "cancelled":
            return await load_booking(conn, ctx, b["id"])
        await cancel_locked(conn, ctx, b, actor, payload.reason.strip(), "reject", full_refund=True)
        return await load_booking(conn, ctx, b["id"])
