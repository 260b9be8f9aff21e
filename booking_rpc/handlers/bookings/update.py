"""`booking.booking.update`: staff of the clinic move a booking along (in-progress, completed, no-show)."""

from __future__ import annotations

from booking_rpc.context import Context
from booking_rpc.domain.booking_states import check_transition
from booking_rpc.errors import RpcError
from booking_rpc.handlers.bookings.access import changing
from booking_rpc.handlers.bookings.rows import load_booking, notify_owner, publish
from booking_rpc.handlers.effects import append_log
from booking_rpc.models.bookings import BookingOut, BookingUpdateRequest
from booking_rpc.models.events import BookingCompleted
from booking_rpc.router import Router

router = Router()

# Reminders that no longer make sense once a booking reaches a status.
CANCEL_REMINDERS: dict[str, list[str] | None] = {
    "in-progress": ["upcoming", "check_in"],
    "completed": ["upcoming", "check_in"],
    "no-show": None,
}


@router.message("booking.booking.update")
async def update_booking(payload: BookingUpdateRequest, ctx: Context) -> BookingOut:
    async with changing(ctx, payload.actor, payload.booking_id, manage="change a booking's status") as (conn, b, actor):
        current, target = b["status"], payload.status
        if current == target:
            return await load_booking(conn, ctx, b["id"])  # a retried change is a no-op
        check_transition(current, target, "update")
        if target == "no-show" and b["db_now"] < b["starts_at"]:
            raise RpcError(
                "ILLEGAL_TRANSITION",
                f"A booking cannot go from '{current}' to 'no-show' before its slot starts",
                {"from": current, "to": target, "action": "update"},
            )
        changed = await conn.fetchrow(ctx.sql["bookings.set_status"], b["id"], target, None)
        assert changed is not None
        await append_log(
            conn, ctx, b["id"], "status_changed", target, {"status": current}, {"status": target}, actor, payload.notes
        )
        if target in CANCEL_REMINDERS:
            await conn.execute(ctx.sql["bookings.cancel_reminders"], b["id"], CANCEL_REMINDERS[target])
        if target == "completed":
            await conn.execute(ctx.sql["bookings.entry_ready_for_settlement"], b["id"])
            snapshot = b["service_snapshot"] or {}
            service_name = snapshot.get("name") or b["service_name"]
            await publish(
                conn,
                ctx,
                b,
                BookingCompleted,
                service_name=service_name,
                completed_at=changed["updated_at"],
            )
            await notify_owner(
                conn,
                ctx,
                b,
                "booking_completed",
                "Visit completed",
                f"Your booking {b['reference_code']} is completed. Tell us how it went!",
                status=target,
            )
        else:
            await notify_owner(
                conn,
                ctx,
                b,
                "booking_status_changed",
                "Booking updated",
                f"Your booking {b['reference_code']} is now {target}.",
                status=target,
            )
        return await load_booking(conn, ctx, b["id"])
