"""Who may see or change a booking (also used by payments, reviews and attachments), and `changing`: the one
way a booking's use cases open a change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg

from booking_rpc.auth import is_privileged, is_staff_of, require_actor
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


@asynccontextmanager
async def changing(
    ctx: Context, actor: Actor | None, booking_id: UUID, *, manage: str | None = None
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Record, Actor]]:
    """One transaction around a change of booking `booking_id`, as every use case that changes one opens it:
    the caller required (UNAUTHENTICATED), the booking locked FOR UPDATE and read (bookings.lock's columns;
    NOT_FOUND when it does not exist or the caller may not see it) and, when `manage` names the change,
    FORBIDDEN ("Only staff of the clinic may {manage}") unless the caller may manage it. Yields the
    connection, the locked row and the actor; commits when the block ends without an error."""
    who = require_actor(actor)
    async with ctx.transaction() as conn:
        await conn.execute(ctx.sql["bookings.lock_row"], booking_id)  # the wait, then a fresh read (see the SQL)
        row = await conn.fetchrow(ctx.sql["bookings.lock"], booking_id)
        if row is None or not can_see(who, row["user_id"], row["clinic_id"]):
            raise not_found("Booking", {"booking_id": str(booking_id)})
        if manage is not None and not can_manage(who, row["clinic_id"]):
            raise RpcError("FORBIDDEN", f"Only staff of the clinic may {manage}")
        yield conn, row, who
