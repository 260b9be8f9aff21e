"""`booking.reservation.confirm`: a pending hold becomes a booking.

In one transaction with the reservation row locked (FOR UPDATE, so two confirms of one hold run one after
the other and the second answers the first's booking): refuse unless the hold is pending, owned, its
`lock_id` matches and it is unexpired on the database clock; then write the booking (reference code retried
on collision inside a savepoint), its payment, the financial entry (fee/tax/clinic split), the reminders
still in the future, the booking log with its first entry, the user's notification, flip the reservation to
`confirmed` and enqueue `booking.confirmed` (+ `payment.processed` when paid). The slot unit the hold took
now belongs to the booking (booked_count unchanged). The table trigger writes `booking.created` /
`booking.status_changed`. A service that `requires_approval` gets a `pending_approval` booking (see
handlers/bookings/__init__.py).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from uuid import UUID

import asyncpg

from booking_rpc.auth import require_self
from booking_rpc.context import Context, savepoint
from booking_rpc.domain.reference_codes import MAX_ATTEMPTS, new_reference_code
from booking_rpc.errors import RpcError, not_found
from booking_rpc.events.outbox import enqueue
from booking_rpc.handlers.bookings.rows import confirmed_event, load_booking
from booking_rpc.handlers.effects import append_log, insert_entry, notify, payment_processed, plan_reminders
from booking_rpc.models.bookings import BookingOut, ConfirmRequest
from booking_rpc.models.common import Actor
from booking_rpc.router import Router

router = Router()

REFERENCE_CONSTRAINT = "bookings_reference_code_key"
RESERVATION_CONSTRAINT = "uq_bookings_reservation"


def _snapshots(r: asyncpg.Record) -> tuple[dict[str, Any], dict[str, Any]]:
    pet = {
        "id": str(r["pet_id"]),
        "name": r["pet_name"],
        "species": r["pet_species"],
        "breed": r["pet_breed"],
    }
    service = {
        "id": str(r["service_id"]),
        "name": r["service_name"],
        "price": str(r["price"]),
        "duration_minutes": r["duration_minutes"],
        "clinic_id": str(r["clinic_id"]),
        "clinic_name": r["clinic_name"],
    }
    return pet, service


async def _insert_booking(
    conn: asyncpg.Connection, ctx: Context, r: asyncpg.Record, payload: ConfirmRequest, payment_id: UUID, status: str
) -> asyncpg.Record:
    pet, service = _snapshots(r)
    for attempt in range(MAX_ATTEMPTS):
        code = new_reference_code()
        try:
            async with savepoint(conn):  # a collision leaves the outer transaction usable
                row = await conn.fetchrow(
                    ctx.sql["bookings.insert"],
                    r["id"],
                    r["user_id"],
                    r["pet_id"],
                    r["clinic_id"],
                    r["service_id"],
                    r["slot_id"],
                    payment_id,
                    code,
                    r["price"],
                    status,
                    payload.notes,
                    pet,
                    service,
                    r["starts_at"],
                )
            assert row is not None
            return row
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != REFERENCE_CONSTRAINT or attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _confirm_once(payload: ConfirmRequest, ctx: Context, actor: Actor) -> BookingOut:
    details = {"reservation_id": str(payload.reservation_id)}
    async with ctx.transaction() as conn:
        r = await conn.fetchrow(ctx.sql["bookings.lock_reservation"], payload.reservation_id)
        if r is None or r["user_id"] != payload.user_id:
            raise not_found("Reservation", details)
        if not secrets.compare_digest(r["lock_id"], payload.lock_id):
            raise RpcError("LOCK_MISMATCH", "The lock_id does not match this reservation", details)
        if r["status"] == "confirmed":
            existing = await conn.fetchval(ctx.sql["bookings.get_by_reservation"], r["id"])
            if existing is not None:
                return await load_booking(conn, ctx, existing)  # idempotent: the same booking
            raise RpcError("ALREADY_CONFIRMED", "The reservation is already confirmed", details)
        if r["status"] == "cancelled":
            raise RpcError("ILLEGAL_TRANSITION", "The reservation was cancelled", {**details, "from": "cancelled"})
        if not r["live"]:  # 'expired', or pending past its TTL on the database clock: nothing is written
            raise RpcError("RESERVATION_EXPIRED", "The reservation has expired", details)

        status = "pending_approval" if r["requires_approval"] else "confirmed"
        payment_id = uuid.uuid4()
        booking = await _insert_booking(conn, ctx, r, payload, payment_id, status)
        booking_id: UUID = booking["id"]
        pay = payload.payment
        method = pay.method if pay else "unspecified"
        external = pay.external_reference if pay else None
        pay_status = pay.status if pay else "pending"
        prow = await conn.fetchrow(
            ctx.sql["payments.insert"],
            payment_id,
            booking_id,
            external,
            r["price"],
            ctx.settings.currency,
            method,
            pay_status,
            pay.details if pay else None,
        )
        assert prow is not None
        await insert_entry(conn, ctx, booking_id, r["clinic_id"], "booking_payment", r["price"], external)
        if status == "confirmed":
            await plan_reminders(conn, ctx, booking_id, r)
        await conn.execute(ctx.sql["bookings.insert_log"], booking_id)
        await append_log(
            conn,
            ctx,
            booking_id,
            "created",
            status,
            {"reservation_id": str(r["id"]), "reservation_status": "pending"},
            {"status": status, "payment_status": pay_status, "amount": str(r["price"])},
            actor,
            payload.notes,
        )
        full = await load_booking(conn, ctx, booking_id)
        code = full.reference_code
        when = f"{r['slot_date'].isoformat()} {r['slot_start_time'].strftime('%H:%M')}"
        what = f"Your booking {code} for {r['service_name']} on {when}"
        kind, title, content = (
            ("booking_confirmed", "Booking confirmed", f"{what} is confirmed.")
            if status == "confirmed"
            else (
                "booking_status_changed",
                "Booking awaiting approval",
                f"{what} is waiting for the clinic's approval.",
            )
        )
        meta = {"booking_id": str(booking_id), "reference_code": code, "status": status}
        await notify(conn, ctx, r["user_id"], booking_id, kind, title, content, meta)
        done = await conn.fetchrow(ctx.sql["bookings.confirm_reservation"], r["id"])
        assert done is not None
        if status == "confirmed":
            await enqueue(conn, ctx.sql, booking_id, confirmed_event(full))
        if pay_status == "success":
            await payment_processed(conn, ctx, prow, "success", prow["paid_at"])
        return full


@router.message("booking.reservation.confirm")
async def confirm_reservation(payload: ConfirmRequest, ctx: Context) -> BookingOut:
    actor = require_self(payload.actor, payload.user_id)
    try:
        return await _confirm_once(payload, ctx, actor)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != RESERVATION_CONSTRAINT:
            raise
        # a concurrent confirm won (cannot happen while the row lock is held, kept as a safety net)
        async with ctx.connection() as conn:
            existing = await conn.fetchval(ctx.sql["bookings.get_by_reservation"], payload.reservation_id)
            if existing is None:
                raise RpcError("CONFLICT", "A concurrent confirm failed; retry") from exc
            return await load_booking(conn, ctx, existing)
