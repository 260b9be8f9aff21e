"""booking.booking.get (one booking by id or reference code) and booking.booking.find (always a page: by key or
by criteria with keyset pages); who sees what."""

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


async def test_get_by_id_alias_and_reference(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    me = user_actor(b.user)
    by_id = await call(app_ctx, "booking.booking.get", {"actor": me, "booking_id": str(b.booking.id)})
    assert by_id.id == b.booking.id and by_id.payment is not None
    by_alias = await call(app_ctx, "booking.booking.get", {"actor": me, "id": str(b.booking.id)})
    assert by_alias == by_id
    by_ref = await call(
        app_ctx,
        "booking.booking.get",
        {"actor": staff(b.cat.clinic_id), "reference_code": b.booking.reference_code.lower()},
    )
    assert by_ref == by_id
    for actor in (user_actor(uuid.uuid4()), staff(uuid.uuid4())):
        err = await call_err(app_ctx, "booking.booking.get", {"actor": actor, "booking_id": str(b.booking.id)})
        assert (err.code, err.status_code, err.details) == ("NOT_FOUND", 404, {"booking_id": str(b.booking.id)})
    err = await call_err(app_ctx, "booking.booking.get", {"actor": admin(), "reference_code": "NOPE"})
    assert (err.code, err.details) == ("NOT_FOUND", {"reference_code": "NOPE"})
    assert (await call_err(app_ctx, "booking.booking.get", {"id": str(b.booking.id)})).code == "UNAUTHENTICATED"
    for bad in (
        {},
        {"booking_id": str(b.booking.id), "id": str(b.booking.id)},
        {"booking_id": str(b.booking.id), "reference_code": b.booking.reference_code},
    ):
        err = await call_err(app_ctx, "booking.booking.get", {"actor": me, **bad})
        assert (err.code, err.status_code) == ("VALIDATION_FAILED", 400), bad


async def test_find_by_key_is_a_page_of_at_most_one(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    me = user_actor(b.user)
    for key in (
        {"booking_id": str(b.booking.id)},
        {"id": str(b.booking.id)},
        {"reference_code": b.booking.reference_code},
    ):
        page = await call(app_ctx, "booking.booking.find", {"actor": me, "include_total": True, **key})
        assert ([i.id for i in page.items], page.next_cursor, page.total) == ([b.booking.id], None, 1), key
    for actor, key in (
        (user_actor(uuid.uuid4()), {"booking_id": str(b.booking.id)}),
        (admin(), {"booking_id": str(uuid.uuid4())}),
        (staff(uuid.uuid4()), {"reference_code": b.booking.reference_code}),
    ):
        page = await call(app_ctx, "booking.booking.find", {"actor": actor, **key})
        assert (page.items, page.next_cursor, page.total) == ([], None, None)
    err = await call_err(
        app_ctx, "booking.booking.find", {"actor": me, "booking_id": str(b.booking.id), "status": ["confirmed"]}
    )
    assert err.code == "VALIDATION_FAILED"


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
