"""The outbox relay delivers a whole booking's story to a genuine NestJS 12 microservice, in order."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.events.relay import OutboxRelay
from booking_rpc.events.subscribers import Subscriber
from booking_rpc.models.events import PUBLISHED_EVENTS
from booking_rpc.schemas import DEFAULT_DIR
from tests.fixtures.interop import nest_server
from tests.helpers import book, call, set_status, user_actor

pytestmark = pytest.mark.interop
EVENT_TYPES = sorted(e.event_type for e in PUBLISHED_EVENTS)


async def test_hold_confirm_complete_review_reaches_nest_in_order(harness: Path, app_ctx: Context, pool: Pool) -> None:
    booked = await book(app_ctx, pool, starts_in=dt.timedelta(days=3))
    await set_status(app_ctx, booked, "in-progress")
    await set_status(app_ctx, booked, "completed")
    await call(
        app_ctx,
        "booking.review.create",
        {"actor": user_actor(booked.user), "booking_id": str(booked.booking.id), "rating": 5, "comment": "great"},
    )
    async with pool.acquire() as conn:
        expected = await conn.fetch("SELECT event_type, payload FROM booking_events_outbox ORDER BY seq")
    async with nest_server(harness, events=EVENT_TYPES) as nest:
        relay = OutboxRelay(
            app_ctx,
            [Subscriber("nest", "127.0.0.1", nest.port, ("booking.*", "reservation.*", "payment.*", "review.*"))],
        )
        try:
            assert await relay.run_once() == len(expected)
            received = await nest.wait_for_events(len(expected))
        finally:
            await relay.stop()
    # per aggregate (the reservation, then the booking) the order is the order of the changes
    assert [e["data"]["event_id"] for e in received] == [r["payload"]["event_id"] for r in expected]
    booking_story = [e["pattern"] for e in received if e["data"].get("booking_id") == str(booked.booking.id)]
    assert booking_story[:2] == ["booking.created", "booking.confirmed"]
    assert booking_story.index("booking.completed") < booking_story.index("review.submitted")
    assert booking_story.count("booking.status_changed") == 2
    for event in received:
        schema: Any = json.loads((DEFAULT_DIR / "events" / "published" / f"{event['pattern']}.json").read_text())
        jsonschema.validate(event["data"], schema)  # exactly the published shapes, as NestJS received them
        assert event["data"]["event_type"] == event["pattern"]
