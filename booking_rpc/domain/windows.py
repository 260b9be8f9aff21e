"""Booking windows of a service: how soon (minimum notice) and how far ahead (horizon) a slot may be held.

- `min_notice_minutes`: the slot must start at least that many *real* minutes after now. Instants, not
  wall-clock readings, so a daylight-saving change between now and the slot neither adds nor removes an
  hour (cal.com #12137: minimum notice landing on the DST day).
- `max_advance_days`: the slot's clinic-local date may be at most that many days after the clinic's local
  today (None: no horizon). Calendar days in the clinic's zone, so a 23- or 25-hour day inside the horizon
  does not move its edge.

`now` is the database clock's. The statements enforce the same rule with the SQL function
`booking_window_refusal` (migration 0015); tests/domain/test_windows.py holds both to the same answers.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal
from zoneinfo import ZoneInfo

WindowRefusal = Literal["TOO_SOON", "TOO_FAR_AHEAD"]


def refusal(
    starts_at: dt.datetime,
    slot_date: dt.date,
    now: dt.datetime,
    tz: ZoneInfo,
    *,
    min_notice_minutes: int,
    max_advance_days: int | None,
) -> WindowRefusal | None:
    """Why a slot is outside the window at `now`, or None when it may be held."""
    if starts_at < now + dt.timedelta(minutes=min_notice_minutes):
        return "TOO_SOON"
    if max_advance_days is not None and slot_date > now.astimezone(tz).date() + dt.timedelta(days=max_advance_days):
        return "TOO_FAR_AHEAD"
    return None
