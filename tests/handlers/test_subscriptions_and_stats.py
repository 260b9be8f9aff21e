"""Dynamic subscriptions feed the relay; platform statistics read the completion-rates view."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.events.relay import OutboxRelay
from tests.helpers import call

ADMIN = {"id": str(uuid.uuid4()), "role": "admin"}
USER = {"id": str(uuid.uuid4()), "role": "user"}


async def test_create_find_delete_and_the_relay_sees_it(app_ctx: Context) -> None:
    created: Any = await call(
        app_ctx,
        "booking.subscriptions.create",
        {"actor": ADMIN, "name": "notifications", "host": "127.0.0.1", "port": 4001, "patterns": ["booking.*"]},
    )
    assert created.name == "notifications"
    listed: Any = await call(app_ctx, "booking.subscriptions.find", {"actor": ADMIN})
    assert [s.name for s in listed.items] == ["notifications"]
    relay = OutboxRelay(app_ctx, [])
    assert [(s.name, s.patterns) for s in await relay.subscribers()] == [("notifications", ("booking.*",))]
    deleted: Any = await call(app_ctx, "booking.subscriptions.delete", {"actor": ADMIN, "name": "notifications"})
    assert deleted.deleted is True
    assert await relay.subscribers() == []


@pytest.mark.parametrize("actor", [None, USER])
async def test_only_platform_actors_manage_subscriptions(app_ctx: Context, actor: Any) -> None:
    payload = {"name": "x", "host": "h", "port": 1, "patterns": ["*"]}
    if actor is not None:
        payload["actor"] = actor
    with pytest.raises(RpcError) as info:
        await call(app_ctx, "booking.subscriptions.create", payload)
    assert info.value.status_code == (401 if actor is None else 403)


async def test_bad_pattern_is_a_validation_error(app_ctx: Context) -> None:
    with pytest.raises(RpcError) as info:
        await call(
            app_ctx,
            "booking.subscriptions.create",
            {"actor": ADMIN, "name": "x", "host": "h", "port": 1, "patterns": ["book*ing"]},
        )
    assert info.value.code == "VALIDATION_FAILED"


async def test_completion_rates_read_the_view(app_ctx: Context) -> None:
    async with app_ctx.transaction() as conn:
        service = await conn.fetchval(
            "INSERT INTO services (clinic_id, name, price) VALUES ($1, 's', 10) RETURNING id", uuid.uuid4()
        )
        slot = await conn.fetchval(
            "INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,"
            " booked_count, capacity) VALUES ($1, '2030-01-01', '10:00', '10:30', '2030-01-01T10:00Z',"
            " '2030-01-01T10:30Z', 2, 2) RETURNING id",
            service,
        )
        for status in ("completed", "cancelled"):
            await conn.execute(
                "INSERT INTO bookings (user_id, pet_id, clinic_id, service_id, slot_id, reference_code, amount,"
                " status) VALUES ($1, $1, $1, $2, $3, $4, 10, $5)",
                uuid.uuid4(),
                service,
                slot,
                uuid.uuid4().hex[:10],
                status,
            )
        await conn.execute("REFRESH MATERIALIZED VIEW booking_completion_rates")
    rates: Any = await call(app_ctx, "booking.stats.completion_rates", {"actor": ADMIN})
    assert len(rates.items) == 1
    assert rates.items[0].total_bookings == 2
    assert str(rates.items[0].completion_rate) == "50.00"
