"""Slot generation over clinic-local wall-clock time, correct across daylight-saving changes.

A clinic thinks in wall-clock hours ("open 09:00-12:00, 30-minute slots"), the database stores both the
seed's local `slot_date` + `slot_start_time`/`slot_end_time` and the real instants `starts_at`/`ends_at`
(UTC). The rules, applied per day and per daily window:

- Slot starts lie on the wall-clock grid `window.start + k * step` (step defaults to the slot length).
- A start that does not exist locally (spring forward gap) is skipped.
- A start that exists twice (fall back) is offered once: at its first occurrence (`fold=0`), or at its
  second (`fold=1`) when the first would run into the transition. The repeated hour is never offered twice,
  so local `(slot_date, slot_start_time)` stays unique.
- Every slot lasts exactly `slot_minutes` of real time: `ends_at = starts_at + slot_minutes`; its local end
  is the wall-clock reading of that instant. A slot whose local end would not come after its local start
  (it runs into the fall-back transition) or would pass the window's end is skipped, as is one that would
  overlap the previous slot of the window in real time. Slots never overlap in real time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """Opening hours of one day in wall-clock time, `start < end` (end exclusive for slot starts)."""

    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after its start {self.start}")


@dataclass(frozen=True, slots=True)
class SlotTime:
    """One generated slot: clinic-local date and wall-clock times plus the real UTC instants."""

    slot_date: dt.date
    start: dt.time
    end: dt.time
    starts_at: dt.datetime
    ends_at: dt.datetime


def _exists(local: dt.datetime, tz: ZoneInfo) -> bool:
    """Whether a naive wall-clock time occurs in `tz` (it doesn't inside a spring-forward gap)."""
    aware = local.replace(tzinfo=tz)
    back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return back == local


def to_utc(local: dt.datetime, tz: ZoneInfo, fold: int = 0) -> dt.datetime | None:
    """The real instant showing `local` on the wall clock (`fold=1`: its second occurrence), or None."""
    if not _exists(local, tz):
        return None
    return local.replace(tzinfo=tz, fold=fold).astimezone(UTC)


def daterange(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def generate_slots(
    *,
    timezone: str | ZoneInfo,
    date_from: dt.date,
    date_to: dt.date,
    windows: Sequence[DailyWindow],
    slot_minutes: int,
    weekdays: Iterable[int] | None = None,
    step_minutes: int | None = None,
) -> list[SlotTime]:
    """Every slot of the schedule, ordered by real start time.

    `weekdays` uses ISO numbering (1 = Monday ... 7 = Sunday); None means every day. `date_to` is inclusive.
    """
    if slot_minutes <= 0:
        raise ValueError("slot_minutes must be positive")
    step = dt.timedelta(minutes=step_minutes if step_minutes is not None else slot_minutes)
    if step <= dt.timedelta(0):
        raise ValueError("step_minutes must be positive")
    if date_to < date_from:
        return []
    tz = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    length = dt.timedelta(minutes=slot_minutes)
    days = None if weekdays is None else frozenset(weekdays)
    ordered = sorted(windows, key=lambda w: (w.start, w.end))
    out: list[SlotTime] = []
    seen: set[tuple[dt.date, dt.time]] = set()
    for day in daterange(date_from, date_to):
        if days is not None and day.isoweekday() not in days:
            continue
        last_end: dt.datetime | None = None
        for window in ordered:
            wall = dt.datetime.combine(day, window.start)
            window_end = dt.datetime.combine(day, window.end)
            while wall + length <= window_end:
                slot = _slot_at(wall, tz, length, window_end)
                wall += step
                if slot is None:
                    continue
                key = (slot.slot_date, slot.start)
                if key in seen or (last_end is not None and slot.starts_at < last_end):
                    continue
                seen.add(key)
                last_end = slot.ends_at
                out.append(slot)
    out.sort(key=lambda s: s.starts_at)
    return out


def _slot_at(wall: dt.datetime, tz: ZoneInfo, length: dt.timedelta, window_end: dt.datetime) -> SlotTime | None:
    tried: set[dt.datetime] = set()
    for fold in (0, 1):
        starts_at = to_utc(wall, tz, fold)
        if starts_at is None:
            return None
        if starts_at in tried:
            break
        tried.add(starts_at)
        ends_at = starts_at + length
        local_end = ends_at.astimezone(tz).replace(tzinfo=None)
        if local_end <= wall or local_end > window_end or local_end.date() != wall.date():
            continue
        return SlotTime(
            slot_date=wall.date(),
            start=wall.time(),
            end=local_end.time(),
            starts_at=starts_at,
            ends_at=ends_at,
        )
    return None
