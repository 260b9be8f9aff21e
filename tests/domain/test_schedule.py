"""Slot generation over clinic-local wall-clock time across DST changes (booking-anchors scenario 9)."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booking_rpc.domain.schedule import DailyWindow, SlotTime, generate_slots

UTC = dt.UTC
WINDOWS = [DailyWindow(dt.time(1), dt.time(4)), DailyWindow(dt.time(13), dt.time(18))]


def day_slots(tz: str, day: str, minutes: int = 30) -> list[SlotTime]:
    d = dt.date.fromisoformat(day)
    return generate_slots(timezone=tz, date_from=d, date_to=d, windows=WINDOWS, slot_minutes=minutes)


def hm(slots: list[SlotTime]) -> list[str]:
    return [f"{s.start:%H:%M}" for s in slots]


def z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def assert_well_formed(slots: list[SlotTime], tz: str, minutes: int = 30) -> None:
    zone = ZoneInfo(tz)
    keys = [(s.slot_date, s.start) for s in slots]
    assert len(keys) == len(set(keys)), "a local (date, start) appears twice"
    for s in slots:
        assert s.ends_at - s.starts_at == dt.timedelta(minutes=minutes), "not its real length"
        assert s.end > s.start
        # the wall clock really reads start/end at the UTC instants
        assert s.starts_at.astimezone(zone).replace(tzinfo=None) == dt.datetime.combine(s.slot_date, s.start)
        assert s.ends_at.astimezone(zone).replace(tzinfo=None) == dt.datetime.combine(s.slot_date, s.end)
    ordered = sorted(slots, key=lambda s: s.starts_at)
    for a, b in itertools.pairwise(ordered):
        assert a.ends_at <= b.starts_at, "slots overlap in real time"


def test_berlin_spring_forward_skips_the_missing_hour() -> None:
    slots = day_slots("Europe/Berlin", "2025-03-30")
    assert_well_formed(slots, "Europe/Berlin")
    night = [s for s in slots if s.start < dt.time(12)]
    # 02:00-03:00 does not exist; 01:30 CET + 30 real minutes is 03:00 CEST
    assert hm(night) == ["01:00", "01:30", "03:00", "03:30"]
    assert [s.starts_at for s in night] == [
        z("2025-03-30T00:00"),
        z("2025-03-30T00:30"),
        z("2025-03-30T01:00"),
        z("2025-03-30T01:30"),
    ]
    assert night[1].end == dt.time(3, 0)
    day = [s for s in slots if s.start >= dt.time(12)]
    assert len(day) == 10
    assert day[0].starts_at == z("2025-03-30T11:00")  # 13:00 CEST = 11:00Z


def test_berlin_fall_back_offers_the_repeated_hour_once() -> None:
    slots = day_slots("Europe/Berlin", "2025-10-26")
    assert_well_formed(slots, "Europe/Berlin")
    night = [s for s in slots if s.start < dt.time(12)]
    assert hm(night) == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"]
    assert [s.starts_at for s in night] == [
        z("2025-10-25T23:00"),  # 01:00 CEST
        z("2025-10-25T23:30"),
        z("2025-10-26T00:00"),  # 02:00 CEST (first occurrence)
        z("2025-10-26T01:30"),  # 02:30 CET: at 02:30 CEST it would run into the transition
        z("2025-10-26T02:00"),  # 03:00 CET
        z("2025-10-26T02:30"),
    ]
    day = [s for s in slots if s.start >= dt.time(12)]
    assert len(day) == 10
    assert day[0].starts_at == z("2025-10-26T12:00")  # 13:00 CET = 12:00Z


def test_new_york_fall_back() -> None:
    slots = day_slots("America/New_York", "2025-11-02")
    assert_well_formed(slots, "America/New_York")
    night = [s for s in slots if s.start < dt.time(12)]
    assert hm(night) == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"]
    assert night[0].starts_at == z("2025-11-02T05:00")  # 01:00 EDT
    assert night[1].starts_at == z("2025-11-02T06:30")  # 01:30 EST
    assert night[2].starts_at == z("2025-11-02T07:00")  # 02:00 EST
    day = [s for s in slots if s.start >= dt.time(12)]
    assert len(day) == 10
    assert day[0].starts_at == z("2025-11-02T18:00")  # 13:00 EST


def test_ordinary_day_and_weekdays() -> None:
    d0 = dt.date(2025, 6, 2)  # a Monday
    slots = generate_slots(
        timezone="Asia/Jakarta",
        date_from=d0,
        date_to=d0 + dt.timedelta(days=6),
        windows=[DailyWindow(dt.time(9), dt.time(12))],
        slot_minutes=60,
        weekdays=[1, 3],
    )
    assert {s.slot_date for s in slots} == {d0, d0 + dt.timedelta(days=2)}
    assert hm(slots[:3]) == ["09:00", "10:00", "11:00"]
    assert slots[0].starts_at == z("2025-06-02T02:00")  # UTC+7


def test_step_and_no_partial_slot() -> None:
    d = dt.date(2025, 6, 2)
    slots = generate_slots(
        timezone="UTC",
        date_from=d,
        date_to=d,
        windows=[DailyWindow(dt.time(9), dt.time(10, 10))],
        slot_minutes=30,
        step_minutes=20,
    )
    # 09:00, 09:20, 09:40 start; 10:00 would end at 10:30 > 10:10; and with step < length they overlap,
    # so only non-overlapping ones are kept
    assert hm(slots) == ["09:00", "09:40"]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        DailyWindow(dt.time(10), dt.time(9))
    with pytest.raises(ValueError):
        generate_slots(
            timezone="UTC",
            date_from=dt.date(2025, 1, 1),
            date_to=dt.date(2025, 1, 1),
            windows=WINDOWS,
            slot_minutes=0,
        )
    assert (
        generate_slots(
            timezone="UTC",
            date_from=dt.date(2025, 1, 2),
            date_to=dt.date(2025, 1, 1),
            windows=WINDOWS,
            slot_minutes=30,
        )
        == []
    )


ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "UTC",
]


@settings(max_examples=60, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    day=st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2026, 12, 31)),
    minutes=st.sampled_from([15, 20, 30, 45, 60]),
    start_h=st.integers(0, 20),
    span_h=st.integers(1, 3),
)
def test_property_well_formed(tz: str, day: dt.date, minutes: int, start_h: int, span_h: int) -> None:
    window = DailyWindow(dt.time(start_h), dt.time(min(start_h + span_h, 23)))
    slots = generate_slots(
        timezone=tz, date_from=day, date_to=day + dt.timedelta(days=1), windows=[window], slot_minutes=minutes
    )
    assert_well_formed(slots, tz, minutes)
    for s in slots:
        assert window.start <= s.start and s.end <= window.end
