"""The SQL booking window (booking_window_refusal, migration 0015) answers as domain.windows does."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from booking_rpc.db.pool import Pool
from booking_rpc.domain.windows import refusal

UTC = dt.UTC
# each zone's DST days of 2025 (and Jakarta, which has none)
DAYS = {
    "Europe/Berlin": [dt.date(2025, 3, 30), dt.date(2025, 10, 26)],
    "America/New_York": [dt.date(2025, 3, 9), dt.date(2025, 11, 2)],
    "Asia/Jakarta": [dt.date(2025, 6, 1)],
}


def cases(n: int) -> list[tuple[dt.datetime, dt.date, dt.datetime, str, int, int | None]]:
    rng = random.Random(20251026)
    out = []
    for _ in range(n):
        tz = rng.choice(list(DAYS))
        zone = ZoneInfo(tz)
        day = rng.choice(DAYS[tz])
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(UTC)
        now = midnight + dt.timedelta(minutes=rng.randrange(-36 * 60, 36 * 60, 5))
        starts_at = now + dt.timedelta(minutes=rng.randrange(-60, 4 * 24 * 60, 5))
        slot_date = starts_at.astimezone(zone).date()
        notice = rng.choice([0, 30, 60, 90, 120, 180, 24 * 60])
        horizon = rng.choice([None, 0, 1, 2, 3])
        out.append((starts_at, slot_date, now, tz, notice, horizon))
    return out


async def test_sql_window_matches_the_domain_rule_around_dst_days(pool: Pool) -> None:
    batch = cases(3000)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT booking_window_refusal(s, d, a, z, n, h) AS why
               FROM unnest($1::timestamptz[], $2::date[], $3::timestamptz[], $4::text[], $5::int[], $6::int[])
                    WITH ORDINALITY AS c(s, d, a, z, n, h, i)
               ORDER BY i""",
            *[list(col) for col in zip(*batch, strict=True)],
        )
    expected = [refusal(s, d, a, ZoneInfo(z), min_notice_minutes=n, max_advance_days=h) for s, d, a, z, n, h in batch]
    got = [r["why"] for r in rows]
    assert got == expected
    # the sample reaches every answer
    assert {"TOO_SOON", "TOO_FAR_AHEAD", None} <= set(got)
