"""Writes that several aggregates' handlers make in their own transaction: the booking log (audit), the
user's in-app notification, the reminders planned for a booking, the financial ledger entry, the
`payment.processed` event of a payment that reached its final state.

One function each, so a booking, a payment or a review writes them the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from booking_rpc.context import Context
from booking_rpc.domain import money, reminders
from booking_rpc.events.outbox import enqueue
from booking_rpc.models.common import Actor, from_row
from booking_rpc.models.events import PaymentProcessed


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
    """One entry in the booking's log (its audit trail)."""
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
    """One in-app notification for the user (read with booking.notifications.find)."""
    await conn.execute(ctx.sql["notifications.insert"], user_id, booking_id, kind, title, content, metadata)


async def plan_reminders(
    conn: asyncpg.Connection, ctx: Context, booking_id: UUID, row: asyncpg.Record | Mapping[str, Any]
) -> None:
    """The booking's reminders still in the future on the database clock (`row`: starts_at, ends_at, db_now)."""
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
    """A pending financial entry for `total`, split into platform fee, tax and the clinic's amount."""
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


async def payment_processed(
    conn: asyncpg.Connection, ctx: Context, payment: asyncpg.Record, status: str, processed_at: dt.datetime
) -> None:
    """`payment.processed` for `payment` (a payments row), which reached `status` (success or failed)."""
    event = from_row(PaymentProcessed, payment, payment_id=payment["id"], status=status, processed_at=processed_at)
    await enqueue(conn, ctx.sql, payment["booking_id"], event)
