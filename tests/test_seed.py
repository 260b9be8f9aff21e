"""The demo data: created through the real handlers, and the same after a second run."""

from __future__ import annotations

import datetime as dt

from booking_rpc.context import Context
from booking_rpc.seed import instructions, seed_demo

TABLES = ("clinics", "users", "pets", "services", "slots")


async def counts(ctx: Context) -> dict[str, int]:
    async with ctx.connection() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def test_seed_demo_is_idempotent(app_ctx: Context) -> None:
    today = dt.date(2026, 11, 24)
    first = await seed_demo(app_ctx, days=10, today=today)
    after_first = await counts(app_ctx)
    assert after_first["clinics"] == 3 and after_first["services"] == 5 and after_first["slots"] > 100
    assert first.slots_created == after_first["slots"]
    second = await seed_demo(app_ctx, days=10, today=today)
    assert second.slots_created == 0
    assert await counts(app_ctx) == after_first
    text = instructions(second, today=today)
    assert "booking-rpc call booking.slots.find" in text and first.clinics[0]["clinic_id"] in text
    async with app_ctx.connection() as conn:
        zone = await conn.fetchval("SELECT timezone FROM clinics WHERE name = 'Tierarzt Berlin Mitte'")
    assert zone == "Europe/Berlin"
