"""`booking.reservation.confirm`, `booking.booking.find/.update/.cancel/.approve/.reject`: the booking lifecycle.

Confirm, in one transaction with the reservation row locked (FOR UPDATE, so two confirms of one hold run
one after the other and the second answers the first's booking): refuse unless the hold is pending, owned,
its `lock_id` matches and it is unexpired on the database clock; then write the booking (reference code
retried on collision inside a savepoint), its payment, the financial entry (fee/tax/clinic split), the
reminders still in the future, the booking log with its first entry, the user's notification, flip the
reservation to `confirmed` and enqueue `booking.confirmed` (+ `payment.processed` when paid). The slot
unit the hold took now belongs to the booking (booked_count unchanged). The table trigger writes
`booking.created` / `booking.status_changed`.

Services that `requires_approval`:
  * confirm creates the booking in `pending_approval`. The reservation becomes `confirmed` (the hold can no
    longer expire) and the unit stays taken by the booking. Payment and financial entry are written as for
    any booking; no reminders yet, no `booking.confirmed` yet; the user gets a "waiting for approval" notice.
  * `booking.booking.approve` (staff of the clinic / admin, before the slot starts): → `confirmed`,
    reminders planned, `booking.confirmed` emitted, user notified.
  * `booking.booking.reject` (staff / admin, reason required): → `cancelled` with a FULL refund of whatever
    was paid (whatever the time), unit given back, reminders cancelled, entry reversed, `booking.cancelled`.
  * the owner may withdraw with `booking.booking.cancel` (normal refund policy).

Status changes go through `domain.booking_states` only; every change appends a booking log entry.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from booking_rpc.auth import is_privileged, is_staff_of, require_actor, require_self
from booking_rpc.context import Context
from booking_rpc.domain import money, reminders
from booking_rpc.domain.booking_states import check_transition
from booking_rpc.domain.reference_codes import MAX_ATTEMPTS, new_reference_code, normalize
from booking_rpc.domain.refunds import Refund, refund_for
from booking_rpc.errors import RpcError, not_found
from booking_rpc.events.outbox import enqueue
from booking_rpc.models.bookings import (
    BookingApproveRequest,
    BookingCancelRequest,
    BookingFindRequest,
    BookingOut,
    BookingPage,
    BookingRejectRequest,
    BookingUpdateRequest,
    ConfirmRequest,
    PaymentOut,
)
from booking_rpc.models.common import Actor, Role, decode_cursor, encode_cursor
from booking_rpc.models.events import BookingCancelled, BookingCompleted, BookingConfirmed, PaymentProcessed
from booking_rpc.router import Router

router = Router()

REFERENCE_CONSTRAINT = "bookings_reference_code_key"
RESERVATION_CONSTRAINT = "uq_bookings_reservation"


# --- shared helpers (also used by payments/reviews/attachments) -------------------------------------------


def payment_out(row: asyncpg.Record) -> PaymentOut | None:
    if row["p_id"] is None:
        return None
    return PaymentOut(
        id=row["p_id"],
        external_reference=row["p_external_reference"],
        amount=row["p_amount"],
        currency=row["p_currency"],
        payment_method=row["p_payment_method"],
        status=row["p_status"],
        paid_at=row["p_paid_at"],
        refund_status=row["p_refund_status"],
        refund_amount=row["p_refund_amount"],
        refunded_at=row["p_refunded_at"],
    )


def booking_out(row: asyncpg.Record) -> BookingOut:
    return BookingOut(
        id=row["id"],
        reservation_id=row["reservation_id"],
        reference_code=row["reference_code"],
        user_id=row["user_id"],
        pet_id=row["pet_id"],
        clinic_id=row["clinic_id"],
        service_id=row["service_id"],
        slot_id=row["slot_id"],
        payment_id=row["payment_id"],
        amount=row["amount"],
        status=row["status"],
        cancellation_reason=row["cancellation_reason"],
        notes=row["notes"],
        pet_snapshot=row["pet_snapshot"] or {},
        service_snapshot=row["service_snapshot"] or {},
        booking_time=row["booking_time"],
        slot_date=row["slot_date"],
        slot_start_time=row["slot_start_time"],
        slot_end_time=row["slot_end_time"],
        ends_at=row["ends_at"],
        payment=payment_out(row),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def can_see(actor: Actor, user_id: UUID, clinic_id: UUID) -> bool:
    """Users see their own bookings, staff their clinic's, admins/services all."""
    if is_privileged(actor):
        return True
    if actor.role == Role.USER:
        return actor.id == user_id
    return is_staff_of(actor, clinic_id)


def can_manage(actor: Actor, clinic_id: UUID) -> bool:
    """Status changes: staff of the clinic, admins, services."""
    return is_privileged(actor) or is_staff_of(actor, clinic_id)


async def load_booking(conn: asyncpg.Connection, ctx: Context, booking_id: UUID) -> BookingOut:
    row = await conn.fetchrow(ctx.sql["bookings.get"], booking_id)
    assert row is not None
    return booking_out(row)


async def lock_visible(conn: asyncpg.Connection, ctx: Context, booking_id: UUID, actor: Actor) -> asyncpg.Record:
    """The booking locked FOR UPDATE, or NOT_FOUND when it doesn't exist or the actor may not see it."""
    row = await conn.fetchrow(ctx.sql["bookings.lock"], booking_id)
    if row is None or not can_see(actor, row["user_id"], row["clinic_id"]):
        raise not_found("Booking", {"booking_id": str(booking_id)})
    return row


async def append_log(
    conn: asyncpg.Connection,
    ctx: Context,
    booking_id: UUID,
    action: str,
    status: str,
    previous: dict[str, Any] | None,
    new: dict[str, Any] | None,
    actor: Actor | None,
    notes: str | None,
) -> None:
    await conn.execute(
        ctx.sql["bookings.append_log"],
        booking_id,
        action,
        status,
        previous,
        new,
        actor.id if actor else None,
        notes,
    )


async def notify(
    conn: asyncpg.Connection,
    ctx: Context,
    user_id: UUID,
    booking_id: UUID | None,
    kind: str,
    title: str,
    content: str,
    metadata: dict[str, Any],
) -> None:
    await conn.execute(ctx.sql["notifications.insert"], user_id, booking_id, kind, title, content, metadata)


async def plan_reminders(conn: asyncpg.Connection, ctx: Context, booking_id: UUID, row: asyncpg.Record) -> None:
    planned = reminders.plan(row["starts_at"], row["ends_at"], row["db_now"])
    if planned:
        await conn.execute(
            ctx.sql["bookings.insert_reminders"],
            booking_id,
            [kind for kind, _ in planned],
            [when for _, when in planned],
        )


async def insert_entry(
    conn: asyncpg.Connection,
    ctx: Context,
    booking_id: UUID,
    clinic_id: UUID,
    kind: str,
    total: Decimal,
    reference: str | None,
) -> None:
    s = ctx.settings
    part = money.split(total, s.platform_fee_percent, s.tax_percent)
    await conn.execute(
        ctx.sql["bookings.insert_financial_entry"],
        booking_id,
        clinic_id,
        kind,
        part.total,
        part.platform_fee,
        part.clinic_amount,
        part.tax,
        s.currency,
        "pending",
        reference,
    )


# --- confirm -----------------------------------------------------------------------------------------------


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
            async with conn.transaction():  # a savepoint: a collision leaves the outer transaction usable
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
        meta = {"booking_id": str(booking_id), "reference_code": code, "status": status}
        if status == "confirmed":
            await notify(
                conn,
                ctx,
                r["user_id"],
                booking_id,
                "booking_confirmed",
                "Booking confirmed",
                f"Your booking {code} for {r['service_name']} on {when} is confirmed.",
                meta,
            )
        else:
            await notify(
                conn,
                ctx,
                r["user_id"],
                booking_id,
                "booking_status_changed",
                "Booking awaiting approval",
                f"Your booking {code} for {r['service_name']} on {when} is waiting for the clinic's approval.",
                meta,
            )
        done = await conn.fetchrow(ctx.sql["bookings.confirm_reservation"], r["id"])
        assert done is not None
        if status == "confirmed":
            await enqueue(conn, ctx.sql, booking_id, confirmed_event(full))
        if pay_status == "success":
            await enqueue(
                conn,
                ctx.sql,
                booking_id,
                PaymentProcessed(
                    payment_id=prow["id"],
                    booking_id=booking_id,
                    amount=prow["amount"],
                    currency=prow["currency"],
                    payment_method=prow["payment_method"],
                    status="success",
                    processed_at=prow["paid_at"],
                ),
            )
        return full


def confirmed_event(b: BookingOut) -> BookingConfirmed:
    return BookingConfirmed(
        booking_id=b.id,
        reference_code=b.reference_code,
        user_id=b.user_id,
        pet_id=b.pet_id,
        clinic_id=b.clinic_id,
        service_id=b.service_id,
        slot_date=b.slot_date,
        slot_time=b.slot_start_time,
        amount=b.amount,
        created_at=b.created_at or b.updated_at or b.ends_at,
    )


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


# --- find --------------------------------------------------------------------------------------------------


@router.message("booking.booking.find")
async def find_bookings(payload: BookingFindRequest, ctx: Context) -> BookingOut | BookingPage:
    actor = require_actor(payload.actor)
    if payload.id is not None or payload.reference_code is not None:
        async with ctx.connection() as conn:
            if payload.id is not None:
                row = await conn.fetchrow(ctx.sql["bookings.get"], payload.id)
                details: dict[str, Any] = {"booking_id": str(payload.id)}
            else:
                assert payload.reference_code is not None
                row = await conn.fetchrow(ctx.sql["bookings.get_by_reference"], normalize(payload.reference_code))
                details = {"reference_code": payload.reference_code}
        if row is None or not can_see(actor, row["user_id"], row["clinic_id"]):
            raise not_found("Booking", details)
        return booking_out(row)

    user_id, clinic_id = payload.user_id, payload.clinic_id
    if actor.role == Role.USER:
        if user_id is not None and user_id != actor.id:
            raise RpcError("FORBIDDEN", "A user may list only their own bookings")
        user_id = actor.id
    elif actor.role == Role.CLINIC_STAFF:
        if actor.clinic_id is None or (clinic_id is not None and clinic_id != actor.clinic_id):
            raise RpcError("FORBIDDEN", "Clinic staff may list only their clinic's bookings")
        clinic_id = actor.clinic_id
    statuses = list(payload.status) if payload.status else None
    by_slot = payload.sort == "slot_time"
    cursor_at: Any = None
    cursor_id: Any = None
    if payload.cursor:
        values = decode_cursor(payload.cursor, 3)
        if values[0] != payload.sort:
            raise RpcError("BAD_REQUEST", "The cursor belongs to another sort order", {"field": "cursor"})
        try:
            cursor_at = dt.datetime.fromisoformat(values[1])
            cursor_id = UUID(values[2])
        except (TypeError, ValueError) as exc:
            raise RpcError("BAD_REQUEST", "The cursor is not valid", {"field": "cursor"}) from exc
    args = (user_id, clinic_id, statuses, payload.date_from, payload.date_to, payload.upcoming_only)
    statement = "bookings.find_by_slot_time" if by_slot else "bookings.find_by_created"
    async with ctx.connection() as conn:
        rows = await conn.fetch(ctx.sql[statement], *args, cursor_at, cursor_id, payload.limit + 1)
        total = await conn.fetchval(ctx.sql["bookings.count"], *args) if payload.include_total else None
    items = [booking_out(r) for r in rows[: payload.limit]]
    next_cursor = None
    if len(rows) > payload.limit:
        last = rows[payload.limit - 1]
        key = last["starts_at"] if by_slot else last["created_at"]
        next_cursor = encode_cursor([payload.sort, key.isoformat(), str(last["id"])])
    return BookingPage(items=items, next_cursor=next_cursor, total=total)


# --- update ------------------------------------------------------------------------------------------------

# Reminders that no longer make sense once a booking reaches a status.
CANCEL_REMINDERS: dict[str, list[str] | None] = {
    "in-progress": ["upcoming", "check_in"],
    "completed": ["upcoming", "check_in"],
    "no-show": None,
}


@router.message("booking.booking.update")
async def update_booking(payload: BookingUpdateRequest, ctx: Context) -> BookingOut:
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        b = await lock_visible(conn, ctx, payload.booking_id, actor)
        if not can_manage(actor, b["clinic_id"]):
            raise RpcError("FORBIDDEN", "Only staff of the clinic may change a booking's status")
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
        meta = {"booking_id": str(b["id"]), "reference_code": b["reference_code"], "status": target}
        if target == "completed":
            await conn.execute(ctx.sql["bookings.entry_ready_for_settlement"], b["id"])
            snapshot = b["service_snapshot"] or {}
            service_name = snapshot.get("name") or b["service_name"]
            await enqueue(
                conn,
                ctx.sql,
                b["id"],
                BookingCompleted(
                    booking_id=b["id"],
                    reference_code=b["reference_code"],
                    user_id=b["user_id"],
                    pet_id=b["pet_id"],
                    clinic_id=b["clinic_id"],
                    service_id=b["service_id"],
                    service_name=service_name,
                    completed_at=changed["updated_at"],
                ),
            )
            await notify(
                conn,
                ctx,
                b["user_id"],
                b["id"],
                "booking_completed",
                "Visit completed",
                f"Your booking {b['reference_code']} is completed. Tell us how it went!",
                meta,
            )
        else:
            await notify(
                conn,
                ctx,
                b["user_id"],
                b["id"],
                "booking_status_changed",
                "Booking updated",
                f"Your booking {b['reference_code']} is now {target}.",
                meta,
            )
        return await load_booking(conn, ctx, b["id"])


# --- cancel / reject ---------------------------------------------------------------------------------------


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
    # every cancellable status holds one unit: give it back (exactly once: a cancelled booking never gets here)
    await conn.execute(ctx.sql["slots.release_unit"], b["slot_id"], 1)
    refund_status: str | None = None
    if payment is not None:
        rec = await conn.fetchrow(ctx.sql["payments.record_refund"], payment["id"], refund.amount)
        assert rec is not None
        refund_status = rec["refund_status"]
    await conn.execute(ctx.sql["bookings.cancel_reminders"], b["id"], None)
    await conn.execute(ctx.sql["bookings.reverse_entry"], b["id"])
    if refund.amount > 0:
        ref = payment["external_reference"] if payment is not None else None
        await insert_entry(conn, ctx, b["id"], b["clinic_id"], "refund", refund.amount, ref)
    await enqueue(
        conn,
        ctx.sql,
        b["id"],
        BookingCancelled(
            booking_id=b["id"],
            reference_code=b["reference_code"],
            user_id=b["user_id"],
            pet_id=b["pet_id"],
            clinic_id=b["clinic_id"],
            cancellation_reason=reason,
            refund_amount=refund.amount,
            refund_status=refund_status,
            cancelled_at=changed["updated_at"],
        ),
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
    await notify(
        conn,
        ctx,
        b["user_id"],
        b["id"],
        "booking_cancelled",
        title,
        f"Your booking {b['reference_code']} was cancelled. Refund: {refund.amount} {ctx.settings.currency}.",
        {"booking_id": str(b["id"]), "reference_code": b["reference_code"], "refund_amount": str(refund.amount)},
    )


@router.message("booking.booking.cancel")
async def cancel_booking(payload: BookingCancelRequest, ctx: Context) -> BookingOut:
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        b = await lock_visible(conn, ctx, payload.booking_id, actor)
        if b["status"] == "cancelled":
            return await load_booking(conn, ctx, b["id"])  # a double cancel is idempotent
        await cancel_locked(conn, ctx, b, actor, payload.reason.strip(), "cancel", full_refund=False)
        return await load_booking(conn, ctx, b["id"])


@router.message("booking.booking.approve")
async def approve_booking(payload: BookingApproveRequest, ctx: Context) -> BookingOut:
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        b = await lock_visible(conn, ctx, payload.booking_id, actor)
        if not can_manage(actor, b["clinic_id"]):
            raise RpcError("FORBIDDEN", "Only staff of the clinic may approve a booking")
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
        await notify(
            conn,
            ctx,
            b["user_id"],
            b["id"],
            "booking_confirmed",
            "Booking confirmed",
            f"The clinic approved your booking {b['reference_code']}.",
            {"booking_id": str(b["id"]), "reference_code": b["reference_code"], "status": "confirmed"},
        )
        return full


@router.message("booking.booking.reject")
async def reject_booking(payload: BookingRejectRequest, ctx: Context) -> BookingOut:
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        b = await lock_visible(conn, ctx, payload.booking_id, actor)
        if not can_manage(actor, b["clinic_id"]):
            raise RpcError("FORBIDDEN", "Only staff of the clinic may reject a booking")
        if b["status"] == "cancelled":
            return await load_booking(conn, ctx, b["id"])
        await cancel_locked(conn, ctx, b, actor, payload.reason.strip(), "reject", full_refund=True)
        return await load_booking(conn, ctx, b["id"])
