"""booking.services.upsert / find against real PostgreSQL."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import admin, call, call_err, snapshot


def svc_body(clinic: uuid.UUID, **extra: Any) -> dict[str, Any]:
    return {"actor": admin(), "clinic_id": str(clinic), "name": "Grooming", "price": "250000.50", **extra}


async def test_upsert_creates_then_updates(app_ctx: Context, pool: Pool) -> None:
    clinic = uuid.uuid4()
    staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(clinic)}
    created = await call(app_ctx, "booking.services.upsert", {**svc_body(clinic), "actor": staff})
    assert created.price == Decimal("250000.50") and created.duration_minutes == 30 and created.is_available
    exceptions = [
        {"date": "2030-12-25", "reason": "Christmas"},
        {"start_date": "2030-12-28", "end_date": "2030-12-31"},
    ]
    updated = await call(
        app_ctx,
        "booking.services.upsert",
        {
            **svc_body(clinic),
            "actor": staff,
            "id": str(created.id),
            "name": "Grooming XL",
            "price": "300000",
            "duration_minutes": 60,
            "is_available": False,
            "availability_exceptions": exceptions,
        },
    )
    assert updated.id == created.id
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM services WHERE id = $1", created.id)
        assert await conn.fetchval("SELECT count(*) FROM services") == 1
    assert row is not None
    assert (row["name"], row["price"], row["duration_minutes"], row["is_available"]) == (
        "Grooming XL",
        Decimal("300000.00"),
        60,
        False,
    )
    assert row["availability_exceptions"] == exceptions
    assert updated.model_dump(mode="json")["price"] == "300000.00"


async def test_upsert_refusals_change_nothing(app_ctx: Context, pool: Pool) -> None:
    clinic = uuid.uuid4()
    created = await call(app_ctx, "booking.services.upsert", svc_body(clinic))
    before = await snapshot(pool)
    other_staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(uuid.uuid4())}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**svc_body(clinic), "actor": None}, "UNAUTHENTICATED"),
        ({**svc_body(clinic), "actor": other_staff}, "FORBIDDEN"),
        ({**svc_body(clinic), "actor": {"id": str(uuid.uuid4()), "role": "user"}}, "FORBIDDEN"),
        # moving a service to another clinic is refused even for an admin
        ({**svc_body(uuid.uuid4()), "id": str(created.id)}, "CONFLICT"),
        ({**svc_body(clinic), "price": "-1"}, "VALIDATION_FAILED"),
        ({**svc_body(clinic), "duration_minutes": 0}, "VALIDATION_FAILED"),
        ({**svc_body(clinic), "availability_exceptions": [{"reason": "no date"}]}, "VALIDATION_FAILED"),
        (
            {
                **svc_body(clinic),
                "availability_exceptions": [{"start_date": "2030-01-05", "end_date": "2030-01-01"}],
            },
            "VALIDATION_FAILED",
        ),
    ]
    for body, code in cases:
        err = await call_err(app_ctx, "booking.services.upsert", body)
        assert err.code == code, (code, err)
        assert await snapshot(pool) == before


async def test_find_paginates_and_filters(app_ctx: Context, pool: Pool) -> None:
    clinic = uuid.uuid4()
    names = [f"Service {i:02d}" for i in range(7)]
    for i, name in enumerate(names):
        await call(app_ctx, "booking.services.upsert", {**svc_body(clinic), "name": name, "is_available": i % 2 == 0})
    await call(app_ctx, "booking.services.upsert", svc_body(uuid.uuid4()))  # another clinic
    got: list[str] = []
    cursor = None
    while True:
        body: dict[str, Any] = {"clinic_id": str(clinic), "limit": 3}
        if cursor:
            body["cursor"] = cursor
        page = await call(app_ctx, "booking.services.find", body)
        got.extend(s.name for s in page.items)
        cursor = page.next_cursor
        if not cursor:
            break
    assert got == names
    avail = await call(app_ctx, "booking.services.find", {"clinic_id": str(clinic), "available_only": True})
    assert [s.name for s in avail.items] == names[::2]
    assert (await call_err(app_ctx, "booking.services.find", {"clinic_id": str(clinic), "limit": 0})).code == (
        "VALIDATION_FAILED"
    )
    assert (await call_err(app_ctx, "booking.services.find", {"clinic_id": str(clinic), "cursor": "x"})).code == (
        "BAD_REQUEST"
    )
