"""The booking trigger's outbox rows, the outbox wake-up NOTIFY, the materialized views, and the SQL helper functions."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg

from booking_rpc.db.pool import Pool
from booking_rpc.events.outbox import INSTANT

CLINIC = uuid.UUID("00000000-0000-0000-0000-000000000033")
USER = uuid.UUID("00000000-0000-0000-0000-000000000011")
PET = uuid.UUID("00000000-0000-0000-0000-000000000022")


async def make_booking(conn: asyncpg.Connection, *, days_ahead: int = 3, reference: str = "REF1") -> uuid.UUID:
    day = dt.date.today() + dt.timedelta(days=days_ahead)
    service = await conn.fetchval(
        "INSERT INTO services (clinic_id, name, price) VALUES ($1, 'Checkup', 150.50) RETURNING id", CLINIC
    )
    start = dt.datetime.combine(day, dt.time(9), dt.UTC)
    slot = await conn.fetchval(
        "INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at) "
        "VALUES ($1, $2, '09:00', '09:30', $3, $4) RETURNING id",
        service,
        day,
        start,
        start + dt.timedelta(minutes=30),
    )
    booking: uuid.UUID = await conn.fetchval(
        "INSERT INTO bookings (user_id, pet_id, clinic_id, service_id, slot_id, reference_code, amount) "
        "VALUES ($1, $2, $3, $4, $5, $6, 150.50) RETURNING id",
        USER,
        PET,
        CLINIC,
        service,
        slot,
        reference,
    )
    return booking


async def outbox(conn: asyncpg.Connection, booking: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, aggregate_type, aggregate_id, event_type, payload, published, attempts, dead, seq "
        "FROM booking_events_outbox WHERE aggregate_id = $1 ORDER BY seq",
        booking,
    )


async def test_insert_writes_booking_created(pool: Pool) -> None:
    async with pool.acquire() as conn:
        booking = await make_booking(conn)
        row = await conn.fetchrow("SELECT * FROM bookings WHERE id = $1", booking)
        assert row is not None
        events = await outbox(conn, booking)

    assert len(events) == 1
    event = events[0]
    assert (event["aggregate_type"], event["event_type"]) == ("booking", "booking.created")
    assert (event["published"], event["attempts"], event["dead"]) == (False, 0, False)
    payload: dict[str, Any] = event["payload"]
    assert payload["event_id"] == str(event["id"])  # consumers deduplicate on the outbox row id
    assert dt.datetime.fromisoformat(payload["occurred_at"]).tzinfo is not None
    assert dt.datetime.fromisoformat(payload["created_at"]) == row["created_at"]
    expected = {
        "event_type": "booking.created",
        "booking_id": str(booking),
        "reference_code": "REF1",
        "user_id": str(USER),
        "pet_id": str(PET),
        "clinic_id": str(CLINIC),
        "service_id": str(row["service_id"]),
        "amount": "150.50",  # a JSON string, never a float
        "status": "confirmed",
    }
    assert {k: payload[k] for k in expected} == expected
    assert set(payload) == set(expected) | {"event_id", "occurred_at", "created_at"}


async def test_status_update_writes_status_changed_only_on_change(pool: Pool) -> None:
    async with pool.acquire() as conn:
        booking = await make_booking(conn)
        await conn.execute("UPDATE bookings SET notes = 'no status change' WHERE id = $1", booking)
        await conn.execute("UPDATE bookings SET status = 'in-progress' WHERE id = $1", booking)
        events = await outbox(conn, booking)

    assert [e["event_type"] for e in events] == ["booking.created", "booking.status_changed"]
    assert events[0]["seq"] < events[1]["seq"]
    payload = events[1]["payload"]
    assert payload["event_id"] == str(events[1]["id"])
    assert {k: payload[k] for k in ("event_type", "booking_id", "reference_code", "previous_status", "new_status")} == {
        "event_type": "booking.status_changed",
        "booking_id": str(booking),
        "reference_code": "REF1",
        "previous_status": "confirmed",
        "new_status": "in-progress",
    }
    assert set(payload) == {
        "event_type",
        "event_id",
        "occurred_at",
        "booking_id",
        "reference_code",
        "previous_status",
        "new_status",
        "changed_at",
    }


async def test_writing_events_does_not_notify(pool: Pool) -> None:
    # a NOTIFY at commit would serialise every writer on PostgreSQL's notification lock (migration 0032)
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
        received.put_nowait((channel, str(payload)))

    async with pool.acquire() as listener, pool.acquire() as writer:
        await listener.add_listener("booking_outbox", on_notify)
        async with writer.transaction():
            await make_booking(writer)  # the booking trigger writes booking.created to the outbox
        assert await writer.fetchval("SELECT count(*) FROM booking_events_outbox") == 1
        await listener.execute("SELECT 1")  # a round trip on the listener: a notification would be read by now
        await asyncio.sleep(0.1)
        assert received.empty()
        await listener.remove_listener("booking_outbox", on_notify)


async def test_materialized_views_refresh_concurrently(pool: Pool) -> None:
    async with pool.acquire() as conn:
        upcoming = await make_booking(conn, days_ahead=3, reference="UP1")
        past = await make_booking(conn, days_ahead=-3, reference="PAST1")
        await conn.execute("UPDATE bookings SET status = 'completed' WHERE id = $1", past)
        # CONCURRENTLY needs a populated view with a unique index; run it twice to use the index path
        for _ in range(2):
            await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY upcoming_bookings_view")
            await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY booking_completion_rates")

        ids = [r["id"] for r in await conn.fetch("SELECT id FROM upcoming_bookings_view")]
        rates = await conn.fetch("SELECT * FROM booking_completion_rates")

    assert ids == [upcoming]
    assert len(rates) == 1
    assert rates[0]["total_bookings"] == 2
    assert rates[0]["completed_bookings"] == 1
    assert str(rates[0]["completion_rate"]) == "50.00"


async def test_exceptions_on_a_day_read_every_shape_the_clinic_service_sends(pool: Pool) -> None:
    exceptions = [
        {"date": "2030-05-01", "reason": "Labour Day"},
        {"start_date": "2030-05-10", "end_date": "2030-05-12", "reason": "Renovation"},
        {"start_date": "2030-06-01", "reason": "One day, no end"},
        "not an object",
        7,
    ]
    query = "SELECT array_agg(e->>'reason' ORDER BY e->>'reason') FROM booking_exceptions_on($1, $2) e"

    async def reasons(value: Any, day: str) -> list[str] | None:
        async with pool.acquire() as conn:
            found: list[str] | None = await conn.fetchval(query, value, dt.date.fromisoformat(day))
        return found

    assert await reasons(exceptions, "2030-05-01") == ["Labour Day"]
    assert await reasons(exceptions, "2030-05-02") is None
    assert await reasons(exceptions, "2030-05-10") == ["Renovation"]
    assert await reasons(exceptions, "2030-05-12") == ["Renovation"]
    assert await reasons(exceptions, "2030-05-13") is None
    assert await reasons(exceptions, "2030-06-01") == ["One day, no end"]
    assert await reasons(exceptions, "2030-06-02") is None
    for not_a_list in ({"date": "2030-05-01"}, None, "2030-05-01"):
        assert await reasons(not_a_list, "2030-05-01") is None


async def test_iso_instant_is_the_models_json_form(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for text in (
            "2030-01-01T09:30:00+07:00",
            "2030-07-01T23:59:59.999999-03:00",
            "1999-12-31T23:59:59+00:00",
            "2030-01-01T02:30:00.120000+00:00",
            "2030-01-01T02:30:00.000001Z",
        ):
            instant = dt.datetime.fromisoformat(text)
            written = await conn.fetchval("SELECT booking_iso_instant($1)", instant)
            assert written == INSTANT.dump_python(instant.astimezone(dt.UTC), mode="json")  # pydantic's form
    assert written == "2030-01-01T02:30:00.000001Z"
