"""booking.booking.get and .find as a NestJS 12 gateway sees them: one shape per pattern, each reply valid
against the published schema (schemas/patterns/), the `id` alias and NOT_FOUND as the client receives them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.schemas import DEFAULT_DIR
from booking_rpc.server.server import Server
from tests.fixtures.interop import nest_client
from tests.helpers import book, staff, user_actor

pytestmark = pytest.mark.interop


def reply_schema(pattern: str) -> Any:
    return json.loads((DEFAULT_DIR / "patterns" / f"{pattern}.reply.json").read_text(encoding="utf-8"))


async def test_get_is_one_booking_and_find_always_a_page(
    harness: Path, app_ctx: Context, pool: Pool, app_server: Server
) -> None:
    b = await book(app_ctx, pool)
    me, booking_id = user_actor(b.user), str(b.booking.id)
    outsider = staff(uuid.uuid4())
    scenario = [
        {"op": "send", "pattern": "booking.booking.get", "data": {"actor": me, "booking_id": booking_id}},
        {"op": "send", "pattern": "booking.booking.get", "data": {"actor": me, "id": booking_id}},
        {
            "op": "send",
            "pattern": "booking.booking.get",
            "data": {"actor": staff(b.cat.clinic_id), "reference_code": b.booking.reference_code},
        },
        {"op": "send", "pattern": "booking.booking.find", "data": {"actor": me, "id": booking_id}},
        {"op": "send", "pattern": "booking.booking.find", "data": {"actor": me, "include_total": True}},
        {"op": "send", "pattern": "booking.booking.find", "data": {"actor": staff(b.cat.clinic_id), "id": booking_id}},
        {"op": "send", "pattern": "booking.booking.get", "data": {"actor": outsider, "id": booking_id}},
        {"op": "send", "pattern": "booking.booking.find", "data": {"actor": outsider, "id": booking_id}},
    ]
    results = await nest_client(harness, app_server.port, scenario)
    one = [r["ok"] for r in results[:3]]
    assert [r["id"] for r in one] == [booking_id] * 3 and one[0] == one[1] == one[2]
    pages = [r["ok"] for r in results[3:6]]
    assert [[i["id"] for i in p["items"]] for p in pages] == [[booking_id]] * 3
    assert pages[1]["total"] == 1
    for r in one:
        jsonschema.validate(r, reply_schema("booking.booking.get"))
    for p in pages:
        jsonschema.validate(p, reply_schema("booking.booking.find"))
    err = results[6]["error"]
    assert (err["code"], err["statusCode"], err["details"]) == ("NOT_FOUND", 404, {"booking_id": booking_id})
    assert results[7]["ok"] == {"items": [], "next_cursor": None, "total": None}
