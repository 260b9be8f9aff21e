"""The cancel cut-off and the reschedule policy."""

from __future__ import annotations

import datetime as dt

from booking_rpc.domain.changes import cancel_refusal, reschedule_refusal

START = dt.datetime(2030, 6, 1, 9, 0, tzinfo=dt.UTC)


def test_cancel_cutoff_binds_owners_not_staff() -> None:
    assert cancel_refusal(START, START - dt.timedelta(hours=12), cutoff_hours=12, by_staff=False) is None  # exactly
    late = START - dt.timedelta(hours=11, minutes=59)
    assert cancel_refusal(late, START, cutoff_hours=0, by_staff=False) is None  # no cut-off
    why = cancel_refusal(START, late, cutoff_hours=12, by_staff=False)
    assert why is not None and "12 hours" in why
    assert cancel_refusal(START, late, cutoff_hours=12, by_staff=True) is None


def test_reschedule_cutoff_and_maximum() -> None:
    early, late = START - dt.timedelta(hours=30), START - dt.timedelta(hours=1)
    kw = {"cutoff_hours": 24.0, "max_reschedules": 3}
    assert reschedule_refusal(START, early, reschedules=0, by_staff=False, **kw) is None
    why = reschedule_refusal(START, late, reschedules=0, by_staff=False, **kw)
    assert why is not None and "24 hours" in why
    assert reschedule_refusal(START, late, reschedules=0, by_staff=True, **kw) is None  # staff override the cut-off
    why = reschedule_refusal(START, early, reschedules=3, by_staff=True, **kw)  # not the maximum
    assert why is not None and "3 times" in why
    assert (
        reschedule_refusal(
            START, START - dt.timedelta(hours=1), reschedules=0, by_staff=False, cutoff_hours=1, max_reschedules=3
        )
        is None
    )
