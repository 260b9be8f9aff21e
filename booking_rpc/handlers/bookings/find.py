"""The two reads: `booking.booking.get` (one booking by id or reference code) and `booking.booking.find`
(always a page, by criteria)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import asyncpg

from booking_rpc.auth import require_actor
from booking_rpc.context import Context
from booking_rpc.domain.reference_codes import normalize
from booking_rpc.errors import RpcError, not_found
from booking_rpc.handlers.bookings.access import can_see
from booking_rpc.handlers.bookings.rows import booking_out
from booking_rpc.models.bookings import BookingFindRequest, BookingGetRequest, BookingOut, BookingPage
from booking_rpc.models.common import Actor, Role, decode_cursor, encode_cursor
from booking_rpc.router import Router

router = Router()


async def visible_by_key(
    ctx: Context, actor: Actor, booking_id: UUID | None, reference_code: str | None
) -> asyncpg.Record | None:
    """The booking with this id (else this reference code), or None when there is none the actor may see."""
    async with ctx.read_connection() as conn:
        if booking_id is not None:
            row = await conn.fetchrow(ctx.sql["bookings.get"], booking_id)
        else:
            assert reference_code is not None
            row = await conn.fetchrow(ctx.sql["bookings.get_by_reference"], normalize(reference_code))
    if row is None or not can_see(actor, row["user_id"], row["clinic_id"]):
        return None
    return row


@router.message("booking.booking.get")
async def get_booking(payload: BookingGetRequest, ctx: Context) -> BookingOut:
    actor = require_actor(payload.actor)
    row = await visible_by_key(ctx, actor, payload.booking_id, payload.reference_code)
    if row is None:
        details: dict[str, Any] = (
            {"booking_id": str(payload.booking_id)}
            if payload.booking_id is not None
            else {"reference_code": payload.reference_code}
        )
        raise not_found("Booking", details)
    return booking_out(row)


@router.message("booking.booking.find")
async def find_bookings(payload: BookingFindRequest, ctx: Context) -> BookingPage:
    actor = require_actor(payload.actor)
    if payload.booking_id is not None or payload.reference_code is not None:
        row = await visible_by_key(ctx, actor, payload.booking_id, payload.reference_code)
        items = [booking_out(row)] if row is not None else []
        return BookingPage(items=items, next_cursor=None, total=len(items) if payload.include_total else None)

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
        sort, cursor_at, cursor_id = decode_cursor(payload.cursor, str, dt.datetime.fromisoformat, UUID)
        if sort != payload.sort:
            raise RpcError("BAD_REQUEST", "The cursor belongs to another sort order", {"field": "cursor"})
    args = (user_id, clinic_id, statuses, payload.date_from, payload.date_to, payload.upcoming_only)
    statement = "bookings.find_by_slot_time" if by_slot else "bookings.find_by_created"
    async with ctx.read_connection() as conn:
        rows = await conn.fetch(ctx.sql[statement], *args, cursor_at, cursor_id, payload.limit + 1)
        total = await conn.fetchval(ctx.sql["bookings.count"], *args) if payload.include_total else None
    items = [booking_out(r) for r in rows[: payload.limit]]
    next_cursor = None
    if len(rows) > payload.limit:
        last = rows[payload.limit - 1]
        key = last["starts_at"] if by_slot else last["created_at"]
        next_cursor = encode_cursor([payload.sort, key.isoformat(), str(last["id"])])
    return BookingPage(items=items, next_cursor=next_cursor, total=total)
