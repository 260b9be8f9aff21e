"""booking.attachments.add/.find and booking.notifications.find/.mark_read."""

from __future__ import annotations

import uuid

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import admin, book, call, call_err, staff, user_actor


async def test_attachments(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    add = {
        "actor": user_actor(b.user),
        "booking_id": str(b.booking.id),
        "file_name": "xray.png",
        "file_url": "https://files/x.png",
        "file_type": "image/png",
        "file_size": 1234,
    }
    a = await call(app_ctx, "booking.attachments.add", add)
    assert a.file_name == "xray.png" and a.file_size == 1234 and not a.is_public
    await call(app_ctx, "booking.attachments.add", {**add, "actor": staff(b.cat.clinic_id), "file_name": "notes.pdf"})
    for actor in (user_actor(b.user), staff(b.cat.clinic_id), admin()):
        got = await call(app_ctx, "booking.attachments.find", {"actor": actor, "booking_id": str(b.booking.id)})
        assert [x.file_name for x in got.items] == ["xray.png", "notes.pdf"]
    for actor in (user_actor(uuid.uuid4()), staff(uuid.uuid4())):
        assert (await call_err(app_ctx, "booking.attachments.add", {**add, "actor": actor})).code == "NOT_FOUND"
        err = await call_err(app_ctx, "booking.attachments.find", {"actor": actor, "booking_id": str(b.booking.id)})
        assert err.code == "NOT_FOUND"
    assert (await call_err(app_ctx, "booking.attachments.add", {**add, "file_size": -1})).code == "VALIDATION_FAILED"
    assert (await call_err(app_ctx, "booking.attachments.add", {**add, "actor": None})).code == "UNAUTHENTICATED"


async def test_notifications(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    await call(
        app_ctx, "booking.booking.cancel", {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "x"}
    )
    me = user_actor(b.user)
    page = await call(app_ctx, "booking.notifications.find", {"actor": me, "limit": 1})
    assert page.unread_count == 2 and len(page.items) == 1 and page.items[0].type == "booking_cancelled"
    rest = await call(app_ctx, "booking.notifications.find", {"actor": me, "limit": 1, "cursor": page.next_cursor})
    assert rest.items[0].type == "booking_confirmed" and rest.next_cursor is None
    err = await call_err(
        app_ctx, "booking.notifications.find", {"actor": user_actor(uuid.uuid4()), "user_id": str(b.user)}
    )
    assert err.code == "FORBIDDEN"
    other = await call(app_ctx, "booking.notifications.find", {"actor": user_actor(uuid.uuid4())})
    assert other.items == [] and other.unread_count == 0
    # someone else's ids are not matched
    stranger = await call(
        app_ctx, "booking.notifications.mark_read", {"actor": user_actor(uuid.uuid4()), "ids": [str(page.items[0].id)]}
    )
    assert stranger.updated == 0
    res = await call(app_ctx, "booking.notifications.mark_read", {"actor": me, "ids": [str(page.items[0].id)]})
    assert (res.updated, res.unread_count) == (1, 1)
    unread = await call(app_ctx, "booking.notifications.find", {"actor": me, "unread_only": True})
    assert [x.type for x in unread.items] == ["booking_confirmed"]
    res = await call(
        app_ctx, "booking.notifications.mark_read", {"actor": admin(), "user_id": str(b.user), "all": True}
    )
    assert (res.updated, res.unread_count) == (1, 0)
    assert (await call_err(app_ctx, "booking.notifications.mark_read", {"actor": me})).code == "VALIDATION_FAILED"
