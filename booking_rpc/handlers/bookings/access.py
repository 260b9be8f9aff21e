"""Who may see or change a booking (also used by payments, reviews and attachments)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from booking_rpc.auth import is_privileged, is_staff_of
from booking_rpc.context import Context
from booking_rpc.errors import RpcError, not_found
from booking_rpc.models.common import Actor, Role


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


async def lock_visible(conn: asyncpg.Connection, ctx: Context, booking_id: UUID, actor: Actor) -> asyncpg.Record:
    """The booking locked FOR UPDATE, or NOT_FOUND when it doesn't exist or the actor may not see it."""
    await conn.execute(ctx.sql["bookings.lock_row"], booking_id)  # the wait, then a fresh read (see the SQL)
    row = await conn.fetchrow(ctx.sql["bookings.lock"], booking_id)
    if row is None or not can_see(actor, row["user_id"], row["clinic_id"]):
        raise not_found("Booking", {"booking_id": str(booking_id)})
    return row


async def lock_managed(
    conn: asyncpg.Connection, ctx: Context, booking_id: UUID, actor: Actor, change: str
) -> asyncpg.Record:
    """`lock_visible`, then FORBIDDEN unless the actor may manage the booking ("Only staff of the clinic may
    {change}")."""
    row = await lock_visible(conn, ctx, booking_id, actor)
    if not can_manage(actor, row["clinic_id"]):
        raise RpcError("FORBIDDEN", f"Only staff of the clinic may {change}")
    return row
