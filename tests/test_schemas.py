"""The checked-in contract (schemas/) matches the code, and what the code writes matches the contract."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import jsonschema
import pytest

from booking_rpc import jsonutil
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.handlers import build_router
from booking_rpc.models.catalog import SlotOut
from booking_rpc.models.events import PUBLISHED_EVENTS
from booking_rpc.schemas import DEFAULT_DIR, check_schemas
from tests.helpers import assert_reply_published, call, make_service, make_slot


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


async def test_replies_are_checked_against_their_published_shape(app_ctx: Context, pool: Pool) -> None:
    # `call` checks every reply it returns; here the check itself is shown to refuse what is not the shape
    assert await call(app_ctx, "ping", None) == "pong"
    assert await call(app_ctx, "echo", {"any": ["thing"]}) == {"any": ["thing"]}
    cat = await make_service(app_ctx)
    await make_slot(pool, cat.service_id)
    today = dt.date.today()
    window = {"date_from": today.isoformat(), "date_to": (today + dt.timedelta(days=4)).isoformat()}
    page = await call(app_ctx, "booking.slots.find", {"service_id": str(cat.service_id), **window})
    reply = jsonutil.loads(jsonutil.dumps(page))
    [item] = reply["items"]
    assert set(item) == set(SlotOut.model_fields)  # the SQL-built rows are SlotOut, field for field
    assert_reply_published("booking.slots.find", reply)
    for broken in (
        {**reply, "items": [{**item, "extra": 1}]},  # a property the contract does not name
        {**reply, "items": [{k: v for k, v in item.items() if k != "remaining"}]},  # one it requires
        {**reply, "items": [{**item, "id": "not-a-uuid"}]},
        {"items": reply["items"]},
    ):
        with pytest.raises(AssertionError, match=r"booking\.slots\.find reply is not its published shape"):
            assert_reply_published("booking.slots.find", broken)
    with pytest.raises(AssertionError, match="ping reply"):
        assert_reply_published("ping", 1)
