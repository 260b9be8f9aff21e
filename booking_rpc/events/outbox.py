"""Writing events: one outbox row in the same transaction as the change it announces."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from booking_rpc.db.queries import Queries
from booking_rpc.models.events import EventPayload

INSTANT: TypeAdapter[dt.datetime] = TypeAdapter(dt.datetime)


def event_body(event: EventPayload, event_id: uuid.UUID, occurred_at: dt.datetime) -> dict[str, Any]:
    """The payload as peers receive it: the seed's shape plus event_id and occurred_at."""
    body: dict[str, Any] = {"event_type": event.event_type}
    body.update(event.model_dump(mode="json"))
    body["event_id"] = str(event_id)
    # in UTC, pydantic's JSON form, as the model's own instants (and SQL's booking_iso_instant): "...Z"
    body["occurred_at"] = INSTANT.dump_python(occurred_at.astimezone(dt.UTC), mode="json")
    return body


async def enqueue(
    conn: asyncpg.Connection,
    sql: Queries,
    aggregate_id: uuid.UUID,
    event: EventPayload,
    *,
    occurred_at: dt.datetime | None = None,
) -> uuid.UUID:
    """Insert the event into booking_events_outbox; must run inside the caller's transaction."""
    event_id = uuid.uuid4()
    when = occurred_at or dt.datetime.now(dt.UTC)
    await conn.execute(
        sql["outbox.enqueue"],
        event_id,
        event.aggregate_type,
        aggregate_id,
        event.event_type,
        event_body(event, event_id, when),
    )
    return event_id
