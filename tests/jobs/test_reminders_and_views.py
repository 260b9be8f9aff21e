"""Due reminders are sent once even with two workers; views refresh; the runner counts its runs."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import jsonschema

from booking_rpc.context import Context
from booking_rpc.jobs.reminders import send_due_reminders
from booking_rpc.jobs.runner import JobRunner
from booking_rpc.jobs.views import refresh_views
from booking_rpc.schemas import DEFAULT_DIR
from tests.helpers import validate_outbox


async def make_booking(conn: asyncpg.Connection) -> uuid.UUID:
    service = await conn.fetchval(
        "INSERT INTO services (clinic_id, name, price) VALUES ($1, 'Vaccination', 150000) RETURNING id",
        uuid.uuid4(),
    )
    slot = await conn.fetchval(
        "INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,"
        " booked_count) VALUES ($1, '2030-01-01', '10:00', '10:30', '2030-01-01T10:00Z', '2030-01-01T10:30Z', 1)"
        " RETURNING id",
        service,
    )
    booking: uuid.UUID = await conn.fetchval(
        "INSERT INTO bookings (user_id, pet_id, clinic_id, service_id, slot_id, reference_code, amount,"
        " service_snapshot, booking_time) VALUES ($1, $2, $3, $4, $5, $6, 150000, $7, '2030-01-01T10:00Z')"
        " RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        service,
        slot,
        uuid.uuid4().hex[:10].upper(),
        {"name": "Vaccination"},
    )
    return booking


async def test_two_workers_never_send_a_reminder_twice(app_ctx: Context) -> None:
    async with app_ctx.transaction() as conn:
        bookings = [await make_booking(conn) for _ in range(5)]
        for b in bookings:
            for kind in ("upcoming", "check_in"):
                await conn.execute(
                    "INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time)"
                    " VALUES ($1, $2, now() - interval '1 minute')",
                    b,
                    kind,
                )
        future = bookings[0]
        await conn.execute(
            "INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time)"
            " VALUES ($1, 'follow_up', now() + interval '1 day')",
            future,
        )
    sent = await asyncio.gather(*(send_due_reminders(app_ctx, batch_size=3) for _ in range(2)))
    assert sum(sent) == 10
    async with app_ctx.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 10
        assert (
            await conn.fetchval("SELECT count(*) FROM booking_events_outbox WHERE event_type = 'booking.reminder.due'")
            == 10
        )
        assert await conn.fetchval("SELECT count(*) FROM booking_reminders WHERE status = 'pending'") == 1
        due = await conn.fetch("SELECT payload FROM booking_events_outbox WHERE event_type = 'booking.reminder.due'")
    assert await send_due_reminders(app_ctx) == 0
    # a published event: its model's own JSON, and valid against the schema other teams read
    await validate_outbox(app_ctx.pool)
    schema = json.loads((DEFAULT_DIR / "events" / "published" / "booking.reminder.due.json").read_text())
    for row in due:
        jsonschema.validate(row["payload"], schema)


async def test_views_refresh_and_show_new_bookings(app_ctx: Context) -> None:
    async with app_ctx.transaction() as conn:
        await make_booking(conn)
    assert await refresh_views(app_ctx) == 2
    async with app_ctx.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM upcoming_bookings_view") == 1
        assert await conn.fetchval("SELECT sum(total_bookings) FROM booking_completion_rates") == 1


async def test_runner_runs_every_job_and_counts(app_ctx: Context) -> None:
    runner = JobRunner(app_ctx)
    for name in runner.jobs:
        await runner.run_job(name)
    assert set(runner.stats.runs) == {"expire_holds", "send_reminders", "refresh_views"}
    assert not runner.stats.errors
