"""Refresh both materialized views without blocking readers; one replica at a time."""

from __future__ import annotations

from booking_rpc.context import Context

VIEWS = ("jobs.refresh_upcoming_bookings", "jobs.refresh_completion_rates")


async def refresh_views(ctx: Context) -> int:
    """The number of views refreshed (0 when another replica holds the job's lock)."""
    async with ctx.transaction() as conn:
        if not await conn.fetchval(ctx.sql["jobs.try_lock"], "refresh_views"):
            return 0
        for name in VIEWS:
            await conn.execute(ctx.sql[name])
    return len(VIEWS)
