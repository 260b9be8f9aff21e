"""Booking windows (minimum notice, horizon) on daylight-saving days in the clinic's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from booking_rpc.domain.windows import refusal

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(text: str, tz: ZoneInfo, fold: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).astimezone(UTC)


def test_minimum_notice_counts_real_minutes_across_spring_forward() -> None:
    # Berlin 2025-03-30: 02:00 -> 03:00. From 00:30 to 03:30 local is 3 wall-clock hours but 2 real ones.
    now = local("2025-03-30T00:30", BERLIN)
    slot = local("2025-03-30T03:30", BERLIN)
    assert slot - now == dt.timedelta(hours=2)
    day = dt.date(2025, 3, 30)
    assert refusal(slot, day, now, BERLIN, min_notice_minutes=150, max_advance_days=None) == "TOO_SOON"
    assert refusal(slot, day, now, BERLIN, min_notice_minutes=120, max_advance_days=None) is None


def test_minimum_notice_counts_real_minutes_across_fall_back() -> None:
    # New York 2025-11-02: 02:00 -> 01:00. From 00:30 to 02:30 local is 2 wall-clock hours but 3 real ones.
    now = local("2025-11-02T00:30", NEW_YORK)
    slot = local("2025-11-02T02:30", NEW_YORK)
    assert slot - now == dt.timedelta(hours=3)
    day = dt.date(2025, 11, 2)
    assert refusal(slot, day, now, NEW_YORK, min_notice_minutes=150, max_advance_days=None) is None
    assert refusal(slot, day, now, NEW_YORK, min_notice_minutes=181, max_advance_days=None) == "TOO_SOON"
    # the repeated hour: 01:30 second occurrence is an hour after the first
    first, second = local("2025-11-02T01:30", NEW_YORK), local("2025-11-02T01:30", NEW_YORK, fold=1)
    assert refusal(second, day, first, NEW_YORK, min_notice_minutes=60, max_advance_days=None) is None
    assert refusal(second, day, first, NEW_YORK, min_notice_minutes=61, max_advance_days=None) == "TOO_SOON"


def test_horizon_is_in_the_clinics_calendar_days_not_24_hour_steps() -> None:
    # 23:30 local on 2025-10-25 in Berlin (21:30 UTC): the clinic's today is the 25th although UTC's is too,
    # and the next day is 25 hours long. A 1-day horizon admits every slot of the 26th, none of the 27th.
    now = local("2025-10-25T23:30", BERLIN)
    late = local("2025-10-26T23:30", BERLIN)
    assert late - now == dt.timedelta(hours=25)
    assert refusal(late, dt.date(2025, 10, 26), now, BERLIN, min_notice_minutes=0, max_advance_days=1) is None
    early = local("2025-10-27T00:00", BERLIN)
    assert refusal(early, dt.date(2025, 10, 27), now, BERLIN, min_notice_minutes=0, max_advance_days=1) == (
        "TOO_FAR_AHEAD"
    )
    # after local midnight (still the 25th in UTC) the clinic's today is the 26th: the 27th comes in range
    after_midnight = local("2025-10-26T00:30", BERLIN)
    assert after_midnight.date() == dt.date(2025, 10, 25)
    assert (
        refusal(early, dt.date(2025, 10, 27), after_midnight, BERLIN, min_notice_minutes=0, max_advance_days=1) is None
    )


def test_zero_horizon_is_today_only_and_no_window_refuses_nothing() -> None:
    now = local("2025-03-30T01:00", BERLIN)
    today, tomorrow = local("2025-03-30T17:00", BERLIN), local("2025-03-31T09:00", BERLIN)
    assert refusal(today, dt.date(2025, 3, 30), now, BERLIN, min_notice_minutes=0, max_advance_days=0) is None
    assert refusal(tomorrow, dt.date(2025, 3, 31), now, BERLIN, min_notice_minutes=0, max_advance_days=0) == (
        "TOO_FAR_AHEAD"
    )
    assert refusal(tomorrow, dt.date(2025, 3, 31), now, BERLIN, min_notice_minutes=0, max_advance_days=None) is None
    # too soon wins over too far (a slot cannot be both; the order is fixed anyway)
    assert refusal(today, dt.date(2099, 1, 1), now, BERLIN, min_notice_minutes=10**6, max_advance_days=0) == "TOO_SOON"
