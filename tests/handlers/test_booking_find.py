"""booking.booking.find: by id, by reference code, by criteria with keyset pages; who sees what."""

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
    confirm_body,
    hold,
    make_service,
    make_slot,
    staff,
    user_actor,
)


async def test_by_id_and_reference(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    by_id = await call(app_ctx, "booking.booking.find", {"actor": user_actor(b.user), "id": str(b.booking.id)})
    assert by_id.id == b.booking.id and by_id.payment is not None
    by_ref = await call(
        app_ctx,
        "booking.booking.find",
        {"actor": staff(b.cat.clinic_id), "reference_code": b.booking.reference_code.lower()},
    )
    assert by_ref.id == b.booking.id
    for actor in (user_actor(uuid.uuid4()), staff(uuid.uuid4())):
        err = await call_err(app_ctx, "booking.booking.find", {"actor": actor, "id": str(b.booking.id)})
        assert (err.code, err.status_code) == ("NOT_FOUND", 404)
    err = await call_err(app_ctx, "booking.booking.find", {"actor": admin(), "id": str(uuid.uuid4())})
    assert err.code == "NOT_FOUND"
    assert (await call_err(app_ctx, "booking.booking.find", {"id": str(b.booking.id)})).code == "UNAUTHENTICATED"


async def test_criteria_pages_sorts_and_scopes(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    user = uuid.uuid4()
    ids = []
    for day in range(1, 8):
        slot = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=day))
        res = await hold(app_ctx, cat, slot, user)
        ids.append((await call(app_ctx, "booking.reservation.confirm", confirm_body(res))).id)
    other = await book(app_ctx, pool)  # another user, another clinic
    me = user_actor(user)
    seen = []
    cursor = None
    while True:
        page = await call(
            app_ctx, "booking.booking.find", {"actor": me, "limit": 3, "cursor": cursor, "include_total": True}
        )
        assert page.total == 7
        seen += [x.id for x in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids  # earliest slot first, no duplicates, nothing missed
    newest = await call(app_ctx, "booking.booking.find", {"actor": me, "sort": "created_at", "limit": 100})
    assert [x.id for x in newest.items] == list(reversed(ids))
    # users are scoped to themselves; asking for someone else is refused
    err = await call_err(app_ctx, "booking.booking.find", {"actor": me, "user_id": str(other.user)})
    assert err.code == "FORBIDDEN"
    # staff see their clinic only
    st = await call(app_ctx, "booking.booking.find", {"actor": staff(cat.clinic_id), "limit": 100})
    assert {x.id for x in st.items} == set(ids)
    err = await call_err(
        app_ctx, "booking.booking.find", {"actor": staff(cat.clinic_id), "clinic_id": str(other.cat.clinic_id)}
    )
    assert err.code == "FORBIDDEN"
    # admin filters: status, date range, upcoming
    await call(app_ctx, "booking.booking.cancel", {"actor": me, "booking_id": str(ids[0]), "reason": "x"})
    conf = await call(
        app_ctx,
        "booking.booking.find",
        {"actor": admin(), "user_id": str(user), "status": ["confirmed"], "include_total": True},
    )
    assert conf.total == 6
    day3 = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date()
    ranged = await call(
        app_ctx,
        "booking.booking.find",
        {"actor": admin(), "clinic_id": str(cat.clinic_id), "date_from": day3.isoformat(), "date_to": day3.isoformat()},
    )
    assert len(ranged.items) == 1
    upcoming = await call(app_ctx, "booking.booking.find", {"actor": me, "upcoming_only": True, "limit": 100})
    assert [x.id for x in upcoming.items] == ids[1:]
    # a cursor of another sort order, a broken cursor, a limit too high
    page = await call(app_ctx, "booking.booking.find", {"actor": me, "limit": 2})
    err = await call_err(
        app_ctx, "booking.booking.find", {"actor": me, "sort": "created_at", "cursor": page.next_cursor}
    )
    assert err.code == "BAD_REQUEST"
    assert (await call_err(app_ctx, "booking.booking.find", {"actor": me, "cursor": "!!"})).code == "BAD_REQUEST"
    assert (await call_err(app_ctx, "booking.booking.find", {"actor": me, "limit": 101})).code == "VALIDATION_FAILED"
