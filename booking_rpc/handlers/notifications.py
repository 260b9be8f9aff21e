"""`booking.notifications.find` / `.mark_read`: a user's in-app notifications, newest first.

A user reads and marks only their own; admins/services may act for any `user_id`.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import asyncpg

from booking_rpc.auth import is_privileged, require_actor
from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.models.bookings import (
    MarkReadResult,
    NotificationFindRequest,
    NotificationMarkReadRequest,
    NotificationOut,
    NotificationPage,
)
from booking_rpc.models.common import Actor, decode_cursor, encode_cursor, from_row
from booking_rpc.router import Router

router = Router()


def _target(actor: Actor, user_id: UUID | None) -> UUID:
    if user_id is None or user_id == actor.id:
        return actor.id
    if is_privileged(actor):
        return user_id
    raise RpcError("FORBIDDEN", "You may read only your own notifications")


def notification_out(row: asyncpg.Record) -> NotificationOut:
    return from_row(NotificationOut, row, metadata=row["metadata"] or {})


@router.message("booking.notifications.find")
async def find_notifications(payload: NotificationFindRequest, ctx: Context) -> NotificationPage:
    actor = require_actor(payload.actor)
    user_id = _target(actor, payload.user_id)
    after_at: dt.datetime | None = None
    after_id: UUID | None = None
    if payload.cursor:
        after_at, after_id = decode_cursor(payload.cursor, dt.datetime.fromisoformat, UUID)
    async with ctx.read_connection() as conn:
        rows = await conn.fetch(
            ctx.sql["notifications.find"], user_id, payload.unread_only, after_at, after_id, payload.limit + 1
        )
        unread = await conn.fetchval(ctx.sql["notifications.unread_count"], user_id)
    next_cursor = None
    if len(rows) > payload.limit:
        last = rows[payload.limit - 1]
        next_cursor = encode_cursor([last["created_at"].isoformat(), str(last["id"])])
    return NotificationPage(
        items=[notification_out(r) for r in rows[: payload.limit]], next_cursor=next_cursor, unread_count=unread
    )


@router.message("booking.notifications.mark_read")
async def mark_read(payload: NotificationMarkReadRequest, ctx: Context) -> MarkReadResult:
    actor = require_actor(payload.actor)
    user_id = _target(actor, payload.user_id)
    async with ctx.transaction() as conn:
        rows = await conn.fetch(ctx.sql["notifications.mark_read"], user_id, payload.ids)
        unread = await conn.fetchval(ctx.sql["notifications.unread_count"], user_id)
    return MarkReadResult(updated=len(rows), unread_count=unread)
