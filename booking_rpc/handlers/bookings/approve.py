"""`booking.booking.approve`: staff confirm a booking awaiting approval, before its slot starts."""

from __future__ import annotations

from booking_rpc.context import Context
from booking_rpc.domain.booking_states import check_transition
from booking_rpc.errors import RpcError
from booking_rpc.events.outbox import enqueue
from booking_rpc.handlers.bookings.access import changing
from booking_rpc.handlers.bookings.rows import confirmed_event, load_booking, notify_owner
from booking_rpc.handlers.effects import append_log, plan_reminders
from booking_rpc.models.bookings import BookingApproveRequest, BookingOut
from booking_rpc.router import Router

router = Router()


@router.message("booking.booking.approve")
async def approve_booking(payload: BookingApproveRequest, ctx: Context) -> BookingOut:
    async with changing(ctx, payload.actor, payload.booking_id, manage="approve a booking") as (conn, b, actor):
        if b["status"] == "confirmed":
            return await load_booking(conn, ctx, b["id"])
        check_transition(b["status"], "confirmed", "approve")
        if b["db_now"] >= b["starts_at"]:
            raise RpcError(
                "ILLEGAL_TRANSITION",
                "The slot has already started; reject the booking instead",
                {"from": b["status"], "to": "confirmed", "action": "approve"},
            )
        await conn.execute(ctx.sql["bookings.set_status"], b["id"], "confirmed", None)
        await plan_reminders(conn, ctx, b["id"], b)
        await append_log(
            conn,
            ctx,
            b["id"],
            "approved",
            "confirmed",
            {"status": b["status"]},
            {"status": "confirmed"},
            actor,
            payload.notes,
        )
        full = await load_booking(conn, ctx, b["id"])
        await enqueue(conn, ctx.sql, b["id"], confirmed_event(full))
        await notify_owner(
            conn,
            ctx,
            b,
            "booking_confirmed",
            "Booking confirmed",
            f"The clinic approved your booking {b['reference_code']}.",
            status="confirmed",
        )
        return full
