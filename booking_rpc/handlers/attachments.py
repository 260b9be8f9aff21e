"""`booking.attachments.add` / `.find`: metadata of files attached to a booking (the files live elsewhere).

The booking's user, staff of its clinic and admins/services may add and list; anyone else gets NOT_FOUND.
"""

from __future__ import annotations

import asyncpg

from booking_rpc.auth import require_actor
from booking_rpc.context import Context
from booking_rpc.errors import not_found
from booking_rpc.handlers.bookings.access import can_see
from booking_rpc.handlers.effects import append_log
from booking_rpc.models.bookings import AttachmentAddRequest, AttachmentFindRequest, AttachmentList, AttachmentOut
from booking_rpc.models.common import Actor, from_row
from booking_rpc.router import Router

router = Router()


def attachment_out(row: asyncpg.Record) -> AttachmentOut:
    return from_row(AttachmentOut, row)


async def _check(conn: asyncpg.Connection, ctx: Context, booking_id: object, actor: Actor) -> None:
    row = await conn.fetchrow(ctx.sql["attachments.booking_owner"], booking_id)
    if row is None or not can_see(actor, row["user_id"], row["clinic_id"]):
        raise not_found("Booking", {"booking_id": str(booking_id)})


@router.message("booking.attachments.add")
async def add_attachment(payload: AttachmentAddRequest, ctx: Context) -> AttachmentOut:
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        await _check(conn, ctx, payload.booking_id, actor)
        row = await conn.fetchrow(
            ctx.sql["attachments.insert"],
            payload.booking_id,
            payload.file_name,
            payload.file_url,
            payload.file_type,
            payload.description,
            payload.file_size,
            payload.is_public,
        )
        assert row is not None
        await append_log(
            conn,
            ctx,
            payload.booking_id,
            "attachment_added",
            "attached",
            None,
            {"attachment_id": str(row["id"]), "file_name": payload.file_name},
            actor,
            None,
        )
        return attachment_out(row)


@router.message("booking.attachments.find")
async def find_attachments(payload: AttachmentFindRequest, ctx: Context) -> AttachmentList:
    actor = require_actor(payload.actor)
    async with ctx.connection() as conn:
        await _check(conn, ctx, payload.booking_id, actor)
        rows = await conn.fetch(ctx.sql["attachments.by_booking"], payload.booking_id)
    return AttachmentList(items=[attachment_out(r) for r in rows])
