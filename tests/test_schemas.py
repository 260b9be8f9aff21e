"""The checked-in contract (schemas/) matches the code, and what the code writes matches the contract."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import jsonschema

from booking_rpc.context import Context
from booking_rpc.handlers import build_router
from booking_rpc.models.events import PUBLISHED_EVENTS
from booking_rpc.schemas import DEFAULT_DIR, check_schemas
from tests.helpers import call


def load(rel: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DEFAULT_DIR / rel).read_text())
    return schema


def test_checked_in_schemas_are_current() -> None:
    stale = check_schemas()
    assert not stale, f"schemas/ is stale ({stale[:5]}...): run `booking-rpc schemas`"


def test_asyncapi_lists_every_pattern_and_event() -> None:
    doc = load("asyncapi.json")
    assert doc["asyncapi"].startswith("3.")
    routes = {r for r, e in build_router().routes.items() if e.kind == "message"}
    assert routes <= set(doc["channels"])
    assert {e.event_type for e in PUBLISHED_EVENTS} <= set(doc["channels"])
    for name in ("user.updated", "pet.updated", "clinic.updated", "service.updated"):
        assert f"consume {name}" in doc["operations"]


async def test_outbox_payloads_validate_against_their_schemas(app_ctx: Context) -> None:
    clinic, user = uuid.uuid4(), uuid.uuid4()
    actor = {"id": str(user), "role": "user"}
    staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(clinic)}
    service: Any = await call(
        app_ctx,
        "booking.services.upsert",
        {"actor": staff, "clinic_id": str(clinic), "name": "Checkup", "price": "100.00"},
    )
    day = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    await call(
        app_ctx,
        "booking.slots.generate",
        {
            "actor": staff,
            "service_id": str(service.id),
            "date_from": day,
            "date_to": day,
            "windows": [{"start": "09:00", "end": "10:00"}],
            "capacity": 2,
        },
    )
    async with app_ctx.connection() as conn:
        slot_id = str(await conn.fetchval("SELECT id FROM slots ORDER BY starts_at LIMIT 1"))
    hold: Any = await call(
        app_ctx,
        "booking.reservation.create",
        {
            "actor": actor,
            "user_id": str(user),
            "pet_id": str(uuid.uuid4()),
            "service_id": str(service.id),
            "slot_id": slot_id,
        },
    )
    await call(
        app_ctx, "booking.reservation.cancel", {"actor": actor, "reservation_id": str(hold.id), "lock_id": hold.lock_id}
    )
    async with app_ctx.connection() as conn:
        rows = await conn.fetch("SELECT event_type, payload FROM booking_events_outbox ORDER BY seq")
    assert [r["event_type"] for r in rows] == ["reservation.created", "reservation.cancelled"]
    for row in rows:
        jsonschema.validate(row["payload"], load(f"events/published/{row['event_type']}.json"))
