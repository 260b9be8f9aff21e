"""`booking.booking.reschedule`: move a booking to another slot in one transaction.

Target: a slot of the same clinic, of the same service or of another service of the clinic whose price
equals what the booking costs (`amount`), so no money changes hands; the booking keeps its status, payment
and reference code. By the booking's owner or staff of its clinic (admins/services too).

Policy (domain.changes): not closer than BOOKING_RPC_RESCHEDULE_CUTOFF_HOURS to the current slot's start
(staff may override) and at most BOOKING_RPC_MAX_RESCHEDULES times per booking (for everyone):
RESCHEDULE_NOT_ALLOWED 409 with the reason. Only bookings not yet under way (confirmed, pending_approval).

One transaction, with the booking row locked: take a unit on the new slot with the hold's conditional update
(`slots.take_unit`: the same rules, so a full, blocked, past or unbookable slot gets the hold's errors and
the booking is untouched), give the old unit back (to the old slot's first waiter if anyone waits), move the
booking (slot, service, booking_time, service snapshot, reschedule_count), cancel its pending reminders and
plan the new slot's, an audit entry with the previous and new state, a notice to the user and one
`booking.rescheduled` event. The status does not change, so the booking trigger writes no status_changed.

`expected_slot_id` (optional) makes it a compare-and-swap: a booking that moved meanwhile is CONFLICT, so of
two concurrent reschedules that both expect the same slot exactly one wins. Asking for the slot the booking
is already on is a no-op (a retried reschedule). A deadlock with a writer locking the two slots in the other
order (another reschedule the other way) rolls back and is retried.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from booking_rpc.context import Context
from booking_rpc.domain.changes import reschedule_refusal
from booking_rpc.errors import RpcError, not_found
from booking_rpc.handlers.bookings.access import can_manage, changing
from booking_rpc.handlers.bookings.rows import load_booking, notify_owner, publish
from booking_rpc.handlers.effects import append_log, plan_reminders
from booking_rpc.handlers.reservations import hold_refusal
from booking_rpc.jobs.offers import offer_freed
from booking_rpc.models.bookings import BookingOut, BookingRescheduleRequest
from booking_rpc.models.events import BookingRescheduled
from booking_rpc.router import Router

router = Router()

MOVABLE = frozenset({"confirmed", "pending_approval"})
DEADLOCK_RETRIES = 3


def _not_allowed(why: str, details: dict[str, Any]) -> RpcError:
    return RpcError("RESCHEDULE_NOT_ALLOWED", f"The booking cannot be rescheduled: {why}", {**details, "reason": why})


def _place(slot_id: Any, service_id: Any, slot_date: Any, slot_time: Any, booking_time: Any) -> dict[str, Any]:
    return {
        "slot_id": str(slot_id),
        "service_id": str(service_id),
        "slot_date": slot_date.isoformat(),
        "slot_time": slot_time.isoformat(),
        "booking_time": booking_time.isoformat() if booking_time else None,
    }


async def _reschedule_once(payload: BookingRescheduleRequest, ctx: Context) -> BookingOut:
    details = {"booking_id": str(payload.booking_id), "slot_id": str(payload.slot_id)}
    async with changing(ctx, payload.actor, payload.booking_id) as (conn, b, actor):
        if b["slot_id"] == payload.slot_id:
            return await load_booking(conn, ctx, b["id"])  # already there: a retried reschedule
        if payload.expected_slot_id is not None and b["slot_id"] != payload.expected_slot_id:
            raise RpcError(
                "CONFLICT", "The booking was moved meanwhile", {**details, "current_slot_id": str(b["slot_id"])}
            )
        if b["status"] not in MOVABLE:
            raise _not_allowed(f"it is {b['status']}", details)
        s = ctx.settings
        why = reschedule_refusal(
            b["starts_at"],
            b["db_now"],
            cutoff_hours=s.reschedule_cutoff_hours,
            reschedules=b["reschedule_count"],
            max_reschedules=s.max_reschedules,
            by_staff=can_manage(actor, b["clinic_id"]),
        )
        if why is not None:
            raise _not_allowed(why, details)
        target = await conn.fetchrow(ctx.sql["slots.diagnose"], payload.slot_id, None)
        if target is None or target["clinic_id"] != b["clinic_id"]:
            raise not_found("Slot", {"slot_id": str(payload.slot_id)})
        if target["service_id"] != b["service_id"] and target["price"] != b["amount"]:
            raise _not_allowed(
                f"the slot's service costs {target['price']}, the booking {b['amount']}",
                {**details, "service_id": str(target["service_id"])},
            )
        new = await conn.fetchrow(ctx.sql["slots.take_unit"], payload.slot_id, b["clinic_id"])
        if new is None:
            raise await hold_refusal(conn, ctx, payload.slot_id, target["service_id"], None)
        await conn.execute(ctx.sql["slots.release_unit"], b["slot_id"], 1)
        await offer_freed(conn, ctx, b["slot_id"])
        moved = await conn.fetchrow(ctx.sql["bookings.move"], b["id"], new["id"], new["service_id"])
        assert moved is not None
        await conn.execute(ctx.sql["bookings.cancel_reminders"], b["id"], None)
        if b["status"] == "confirmed":  # a booking awaiting approval gets its reminders when approved
            await plan_reminders(
                conn, ctx, b["id"], {"starts_at": new["starts_at"], "ends_at": new["ends_at"], "db_now": b["db_now"]}
            )
        previous = _place(b["slot_id"], b["service_id"], b["slot_date"], b["slot_start_time"], b["booking_time"])
        now = _place(new["id"], new["service_id"], new["slot_date"], new["slot_start_time"], moved["booking_time"])
        await append_log(
            conn,
            ctx,
            b["id"],
            "rescheduled",
            b["status"],
            {**previous, "reschedule_count": b["reschedule_count"]},
            {**now, "reschedule_count": moved["reschedule_count"]},
            actor,
            payload.reason,
        )
        when = f"{new['slot_date'].isoformat()} {new['slot_start_time'].strftime('%H:%M')}"
        await notify_owner(
            conn,
            ctx,
            b,
            "booking_status_changed",
            "Booking rescheduled",
            f"Your booking {b['reference_code']} is now on {when}.",
            slot_id=str(new["id"]),
        )
        await publish(
            conn,
            ctx,
            b,
            BookingRescheduled,
            previous_slot_id=b["slot_id"],
            previous_service_id=b["service_id"],
            previous_slot_date=b["slot_date"],
            previous_slot_time=b["slot_start_time"],
            new_slot_id=new["id"],
            new_service_id=new["service_id"],
            new_slot_date=new["slot_date"],
            new_slot_time=new["slot_start_time"],
            booking_time=moved["booking_time"],
            reason=payload.reason,
            rescheduled_by=actor.id,
            rescheduled_by_role=actor.role.value,
            rescheduled_at=moved["updated_at"],
        )
        return await load_booking(conn, ctx, b["id"])


@router.message("booking.booking.reschedule")
async def reschedule_booking(payload: BookingRescheduleRequest, ctx: Context) -> BookingOut:
    """Move a booking to another slot of its clinic (same service, or one with the same price)."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            return await _reschedule_once(payload, ctx)
        except asyncpg.DeadlockDetectedError:
            if attempt == DEADLOCK_RETRIES:
                raise
    raise AssertionError("unreachable")
