"""booking.booking.update: the state machine, log entries, events, settlement, authorization, races."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.domain.booking_states import STATUSES, is_allowed
from booking_rpc.errors import RpcError
from tests.helpers import (
    Booked,
    admin,
    assert_invariant,
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

PATHS = {
    "confirmed": [],
    "in-progress": ["in-progress"],
    "completed": ["in-progress", "completed"],
    "no-show": ["no-show"],
    "cancelled": None,
}


async def reach(ctx: Context, pool: Pool, status: str) -> Booked:
    b = await book(ctx, pool)
    if status in ("no-show", "in-progress", "completed"):
        await shift_slot(pool, b.slot, dt.timedelta(minutes=-5))
    if status == "cancelled":
        await call(
            ctx, "booking.booking.cancel", {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "x"}
        )
    for step in PATHS.get(status) or []:
        await set_status(ctx, b, step)
    return b


async def test_complete_path_logs_events_and_settlement(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    out = await set_status(app_ctx, b, "in-progress")
    assert out.status == "in-progress"
    out = await set_status(app_ctx, b, "completed")
    assert out.status == "completed"
    entries = await fetch(
        pool,
        """SELECT e.* FROM booking_log_entries e JOIN booking_logs l ON l.id = e.log_id
                                   WHERE l.booking_id = $1 ORDER BY e.created_at, e.id""",
        b.booking.id,
    )
    changes = [(e["previous_state"], e["new_state"]) for e in entries if e["action"] == "status_changed"]
    assert changes == [
        ({"status": "confirmed"}, {"status": "in-progress"}),
        ({"status": "in-progress"}, {"status": "completed"}),
    ]
    assert all(e["performed_by"] is not None for e in entries if e["action"] == "status_changed")
    fe = await fetch(pool, "SELECT status FROM financial_entries WHERE booking_id = $1", b.booking.id)
    assert [r["status"] for r in fe] == ["ready_for_settlement"]
    completed = await outbox(pool, "booking.completed")
    assert len(completed) == 1 and completed[0]["payload"]["service_name"] == "Vaccination"
    changed = [e["payload"]["new_status"] for e in await outbox(pool, "booking.status_changed")]
    assert changed == ["in-progress", "completed"]
    # a retried completion is a no-op: no second event, no second log entry
    await set_status(app_ctx, b, "completed")
    assert len(await outbox(pool, "booking.completed")) == 1
    await validate_outbox(pool)
    await assert_invariant(pool)


@pytest.mark.parametrize("current", ["confirmed", "in-progress", "completed", "no-show", "cancelled"])
async def test_every_illegal_transition(app_ctx: Context, pool: Pool, current: str) -> None:
    b = await reach(app_ctx, pool, current)
    for target in STATUSES:
        if target == current or is_allowed(current, target, "update"):
            continue
        err = await call_err(
            app_ctx,
            "booking.booking.update",
            {"actor": staff(b.cat.clinic_id), "booking_id": str(b.booking.id), "status": target},
        )
        assert (err.code, err.status_code) == ("ILLEGAL_TRANSITION", 409), (current, target)
        assert current in err.message and target in err.message


async def test_no_show_only_after_start(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    err = await call_err(
        app_ctx,
        "booking.booking.update",
        {"actor": staff(b.cat.clinic_id), "booking_id": str(b.booking.id), "status": "no-show"},
    )
    assert err.code == "ILLEGAL_TRANSITION"
    await shift_slot(pool, b.slot, dt.timedelta(minutes=-1))
    out = await set_status(app_ctx, b, "no-show")
    assert out.status == "no-show"
    rem = await fetch(pool, "SELECT status FROM booking_reminders WHERE booking_id = $1", b.booking.id)
    assert all(r["status"] == "cancelled" for r in rem)


async def test_update_authorization(app_ctx: Context, pool: Pool) -> None:
    b = await book(app_ctx, pool)
    body = {"booking_id": str(b.booking.id), "status": "in-progress"}
    assert (await call_err(app_ctx, "booking.booking.update", body)).code == "UNAUTHENTICATED"
    assert (await call_err(app_ctx, "booking.booking.update", {**body, "actor": user_actor(b.user)})).code == (
        "FORBIDDEN"
    )
    assert (await call_err(app_ctx, "booking.booking.update", {**body, "actor": user_actor(uuid.uuid4())})).code == (
        "NOT_FOUND"
    )
    assert (await call_err(app_ctx, "booking.booking.update", {**body, "actor": staff(uuid.uuid4())})).code == (
        "NOT_FOUND"
    )
    assert (await call(app_ctx, "booking.booking.update", {**body, "actor": admin()})).status == "in-progress"


async def test_concurrent_cancel_vs_complete_one_wins(app_ctx: Context, pool: Pool) -> None:
    for _ in range(4):
        b = await book(app_ctx, pool)
        await shift_slot(pool, b.slot, dt.timedelta(minutes=-5))
        await set_status(app_ctx, b, "in-progress")
        results = await asyncio.gather(
            set_status(app_ctx, b, "completed"),
            call(
                app_ctx,
                "booking.booking.cancel",
                {"actor": user_actor(b.user), "booking_id": str(b.booking.id), "reason": "changed my mind"},
            ),
            return_exceptions=True,
        )
        oks = [r for r in results if not isinstance(r, BaseException)]
        errs = [r for r in results if isinstance(r, BaseException)]
        assert len(oks) == 1 and len(errs) == 1
        assert isinstance(errs[0], RpcError) and errs[0].code == "ILLEGAL_TRANSITION"
        final = await fetch(pool, "SELECT status FROM bookings WHERE id = $1", b.booking.id)
        assert final[0]["status"] == oks[0].status
        n_done = len(
            [
                e
                for e in await outbox(pool)
                if e["aggregate_id"] == b.booking.id and e["event_type"] in ("booking.completed", "booking.cancelled")
            ]
        )
        assert n_done == 1
    await assert_invariant(pool)
