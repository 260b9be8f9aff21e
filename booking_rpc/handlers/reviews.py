"""`booking.review.create`: the booking's user reviews a completed visit, once; emits `review.submitted`."""

from __future__ import annotations

import asyncpg

from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.handlers.bookings.access import changing
from booking_rpc.handlers.bookings.rows import publish
from booking_rpc.handlers.effects import append_log
from booking_rpc.models.bookings import ReviewCreateRequest, ReviewOut
from booking_rpc.models.common import Role, from_row
from booking_rpc.models.events import ReviewSubmitted
from booking_rpc.router import Router

router = Router()

ONE_REVIEW_CONSTRAINT = "uq_reviews_booking"


def review_out(row: asyncpg.Record) -> ReviewOut:
    return from_row(
        ReviewOut, row, attachments=row["attachments"] or [], ratings_breakdown=row["ratings_breakdown"] or {}
    )


@router.message("booking.review.create")
async def create_review(payload: ReviewCreateRequest, ctx: Context) -> ReviewOut:
    details = {"booking_id": str(payload.booking_id)}
    try:
        async with changing(ctx, payload.actor, payload.booking_id) as (conn, b, actor):
            if actor.role != Role.USER or actor.id != b["user_id"]:
                raise RpcError("FORBIDDEN", "Only the booking's user may review it", details)
            if b["status"] != "completed":
                raise RpcError(
                    "BOOKING_NOT_COMPLETED",
                    "Only a completed booking can be reviewed",
                    {**details, "status": b["status"]},
                )
            if await conn.fetchrow(ctx.sql["reviews.get_by_booking"], b["id"]) is not None:
                raise RpcError("ALREADY_REVIEWED", "This booking was already reviewed", details)
            row = await conn.fetchrow(
                ctx.sql["reviews.insert"],
                b["id"],
                b["user_id"],
                b["clinic_id"],
                b["service_id"],
                payload.rating,
                payload.comment,
                payload.attachments,
                payload.ratings_breakdown,
            )
            assert row is not None
            await publish(
                conn,
                ctx,
                b,
                ReviewSubmitted,
                review_id=row["id"],
                rating=row["rating"],
                submitted_at=row["created_at"],
            )
            await conn.execute(ctx.sql["bookings.cancel_reminders"], b["id"], ["review_request"])
            await append_log(conn, ctx, b["id"], "reviewed", b["status"], None, {"rating": payload.rating}, actor, None)
            return review_out(row)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == ONE_REVIEW_CONSTRAINT:
            raise RpcError("ALREADY_REVIEWED", "This booking was already reviewed", details) from exc
        raise
