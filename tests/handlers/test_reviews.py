"""The whole path hold → confirm → in-progress → completed → review, and the review rules."""

from __future__ import annotations

import datetime as dt
import uuid

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import (
    admin,
    book,
    call,
    call_err,
    fetch,
    outbox,
    set_status,
    shift_slot,
    staff,
    user_actor,
    validate_outbox,
)


async def test_whole_path_to_review(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    review = {
        "actor": user_actor(b.user),
        "booking_id": str(b.booking.id),
        "rating": 5,
        "comment": "great",
        "ratings_breakdown": {"staff": 5, "cleanliness": 4},
    }
    err = await call_err(app_ctx, "booking.review.create", review)
    assert (err.code, err.status_code) == ("BOOKING_NOT_COMPLETED", 409)
    await shift_slot(pool, b.slot, dt.timedelta(minutes=-40))
    await set_status(app_ctx, b, "in-progress")
    await set_status(app_ctx, b, "completed")
    for actor, code in (
        (user_actor(uuid.uuid4()), "NOT_FOUND"),
        (staff(uuid.uuid4()), "NOT_FOUND"),
        (staff(b.cat.clinic_id), "FORBIDDEN"),
        (admin(), "FORBIDDEN"),
        (None, "UNAUTHENTICATED"),
    ):
        assert (await call_err(app_ctx, "booking.review.create", {**review, "actor": actor})).code == code
    for bad in ({"rating": 0}, {"rating": 6}, {"ratings_breakdown": {"x": 9}}):
        assert (await call_err(app_ctx, "booking.review.create", {**review, **bad})).code == "VALIDATION_FAILED"
    out = await call(app_ctx, "booking.review.create", review)
    assert out.rating == 5 and out.is_verified and out.ratings_breakdown == {"staff": 5, "cleanliness": 4}
    err = await call_err(app_ctx, "booking.review.create", review)
    assert (err.code, err.status_code) == ("ALREADY_REVIEWED", 409)
    ev = await outbox(pool, "review.submitted")
    assert len(ev) == 1 and ev[0]["payload"]["rating"] == 5 and ev[0]["payload"]["review_id"] == str(out.id)
    types = [e["event_type"] for e in await outbox(pool) if e["aggregate_id"] == b.booking.id]
    assert types == [
        "booking.created",
        "booking.confirmed",
        "payment.processed",
        "booking.status_changed",
        "booking.status_changed",
        "booking.completed",
        "review.submitted",
    ]
    assert await validate_outbox(pool) >= len(types) + 1
    assert len(await fetch(pool, "SELECT id FROM reviews")) == 1
