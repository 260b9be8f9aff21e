"""The genuine NestJS 12 client reschedules a booking and takes a waitlist offer end to end; a NestJS 12
subscriber receives booking.rescheduled and waitlist.offered with the documented payloads."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.events.relay import OutboxRelay
from booking_rpc.events.subscribers import Subscriber
from booking_rpc.schemas import DEFAULT_DIR
from booking_rpc.server.server import Server
from tests.fixtures.interop import nest_client, nest_server
from tests.helpers import book, hold, make_slot, outbox, user_actor

pytestmark = pytest.mark.interop


def send(pattern: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"op": "send", "pattern": pattern, "data": data}


async def test_nest_client_reschedules_and_confirms_a_waitlist_offer(
    harness: Path, app_ctx: Context, pool: Pool, app_server: Server
) -> None:
    b = await book(app_ctx, pool)
    later = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=5))
    full = await make_slot(pool, b.cat.service_id, starts_in=dt.timedelta(days=6))
    taken = await hold(app_ctx, b.cat, full, uuid.uuid4())
    waiter = uuid.uuid4()
    owner = user_actor(b.user)
    move = {"actor": owner, "booking_id": str(b.booking.id)}
    first = await nest_client(
        harness,
        app_server.port,
        [
            send("booking.booking.reschedule", {**move, "slot_id": str(full)}),  # full: refused, untouched
            send("booking.booking.reschedule", {**move, "slot_id": str(later), "reason": "work trip"}),
            send(
                "booking.waitlist.join",
                {
                    "actor": user_actor(waiter),
                    "user_id": str(waiter),
                    "pet_id": str(uuid.uuid4()),
                    "service_id": str(b.cat.service_id),
                    "slot_id": str(full),
                },
            ),
            send(
                "booking.reservation.cancel",
                {"actor": user_actor(taken.user_id), "reservation_id": str(taken.id), "lock_id": taken.lock_id},
            ),
            send("booking.waitlist.find", {"actor": user_actor(waiter)}),
        ],
    )
    refused, moved, joined, _, found = first
    assert refused["error"]["code"] == "SLOT_FULL" and refused["error"]["statusCode"] == 409
    assert moved["ok"]["slot_id"] == str(later) and moved["ok"]["reschedule_count"] == 1
    assert joined["ok"]["status"] == "waiting" and joined["ok"]["position"] == 1
    (offer,) = found["ok"]["items"]
    assert offer["status"] == "offered" and offer["lock_id"]
    (confirmed,) = await nest_client(
        harness,
        app_server.port,
        [
            send(
                "booking.reservation.confirm",
                {
                    "actor": user_actor(waiter),
                    "reservation_id": offer["reservation_id"],
                    "lock_id": offer["lock_id"],
                    "user_id": str(waiter),
                },
            )
        ],
    )
    assert confirmed["ok"]["slot_id"] == str(full) and confirmed["ok"]["status"] == "confirmed"

    expected = await outbox(pool)
    wanted = ("booking.rescheduled", "waitlist.offered")
    async with nest_server(harness, events=list(wanted)) as nest:
        relay = OutboxRelay(app_ctx, [Subscriber("nest", "127.0.0.1", nest.port, wanted)])
        try:
            await relay.run_once()
            received = await nest.wait_for_events(2)
        finally:
            await relay.stop()
    by_pattern = {e["pattern"]: e["data"] for e in received}
    assert set(by_pattern) == set(wanted)
    for pattern, data in by_pattern.items():
        schema: Any = json.loads((DEFAULT_DIR / "events" / "published" / f"{pattern}.json").read_text())
        jsonschema.validate(data, schema)
        (row,) = [r for r in expected if r["event_type"] == pattern]
        assert data == dict(row["payload"])  # what the NestJS peer got is what the outbox documents
    assert by_pattern["booking.rescheduled"]["new_slot_id"] == str(later)
    assert by_pattern["booking.rescheduled"]["previous_slot_id"] == str(b.slot)
    assert by_pattern["waitlist.offered"]["lock_id"] == offer["lock_id"]
    assert by_pattern["waitlist.offered"]["user_id"] == str(waiter)
