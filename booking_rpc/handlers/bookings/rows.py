"""Booking rows (`bookings.get` and the statements returning its columns) as reply models and events, and
`publish` (an event about a booking, to the outbox) and `notify_owner` (a notice to its user)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from booking_rpc.context import Context
from booking_rpc.events.outbox import enqueue
from booking_rpc.handlers.effects import notify
from booking_rpc.models.bookings import BookingOut, PaymentOut
from booking_rpc.models.common import from_row
from booking_rpc.models.events import BookingConfirmed, EventPayload

# An event's fields that name the booking it is about, and the booking row's columns they come from.
BOOKING_KEYS = {
    "booking_id": "id",
    "reference_code": "reference_code",
    "user_id": "user_id",
    "pet_id": "pet_id",
    "clinic_id": "clinic_id",
    "service_id": "service_id",
}


def payment_out(row: asyncpg.Record) -> PaymentOut | None:
    """The payment columns of a booking row (`p_id`, `p_amount`, ...), or None without a payment."""
    return None if row["p_id"] is None else from_row(PaymentOut, row, prefix="p_")


def booking_out(row: asyncpg.Record) -> BookingOut:
    return from_row(
        BookingOut,
        row,
        pet_snapshot=row["pet_snapshot"] or {},
        service_snapshot=row["service_snapshot"] or {},
        payment=payment_out(row),
    )


async def load_booking(conn: asyncpg.Connection, ctx: Context, booking_id: UUID) -> BookingOut:
    """The booking as its reply (it must exist: the caller just read or wrote it in this transaction)."""
    row = await conn.fetchrow(ctx.sql["bookings.get"], booking_id)
    assert row is not None
    return booking_out(row)


def confirmed_event(b: BookingOut) -> BookingConfirmed:
    """`booking.confirmed` for a booking that just became confirmed (by confirm or approve)."""
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


async def publish(
    conn: asyncpg.Connection, ctx: Context, b: asyncpg.Record, event: type[EventPayload], **fields: Any
) -> None:
    """Write `event` about booking row `b` to the outbox (aggregate: the booking). The booking's own keys
    that the event carries (BOOKING_KEYS) come from the row; `fields` give the rest."""
    own = {name: b[column] for name, column in BOOKING_KEYS.items() if name in event.model_fields}
    await enqueue(conn, ctx.sql, b["id"], event(**own, **fields))


async def notify_owner(
    conn: asyncpg.Connection, ctx: Context, b: asyncpg.Record, kind: str, title: str, content: str, **meta: str
) -> None:
    """A notification to booking row `b`'s user about it: its metadata names the booking (booking_id,
    reference_code) and carries `meta`."""
    metadata = {"booking_id": str(b["id"]), "reference_code": b["reference_code"], **meta}
    await notify(conn, ctx, b["user_id"], b["id"], kind, title, content, metadata)
