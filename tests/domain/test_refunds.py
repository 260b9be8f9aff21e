"""Refund policy: tiers by time before the start, never more than paid."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from booking_rpc.domain.refunds import refund_for, refund_moves_forward, refund_predecessors

START = dt.datetime(2030, 6, 1, 9, 0, tzinfo=dt.UTC)


def r(paid: str, before: dt.timedelta, late: str = "50") -> Decimal:
    return refund_for(
        Decimal(paid), START, START - before, full_refund_hours=24, late_refund_percent=Decimal(late)
    ).amount


def test_tiers() -> None:
    assert r("100.00", dt.timedelta(hours=48)) == Decimal("100.00")
    assert r("100.00", dt.timedelta(hours=24)) == Decimal("100.00")  # exactly 24 h: full
    assert r("100.00", dt.timedelta(hours=23, minutes=59)) == Decimal("50.00")
    assert r("100.00", dt.timedelta(seconds=1)) == Decimal("50.00")
    assert r("100.00", dt.timedelta(0)) == Decimal("0.00")  # started
    assert r("100.00", -dt.timedelta(hours=1)) == Decimal("0.00")
    assert r("0.05", dt.timedelta(hours=1)) == Decimal("0.02")  # 0.025 half-even
    assert r("0.00", dt.timedelta(days=3)) == Decimal("0.00")  # nothing paid, nothing back


@given(
    st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False),
    st.integers(min_value=-(10**7), max_value=10**7),
    st.decimals(min_value=0, max_value=100, places=2, allow_nan=False),
    st.floats(min_value=0, max_value=24 * 30),
)
def test_never_more_than_paid(paid: Decimal, seconds: int, late: Decimal, hours: float) -> None:
    now = START - dt.timedelta(seconds=seconds)
    ref = refund_for(paid, START, now, full_refund_hours=hours, late_refund_percent=late)
    assert Decimal(0) <= ref.amount <= paid
    if now >= START:
        assert ref.amount == 0


def test_refund_lifecycle_only_moves_forward() -> None:
    assert refund_moves_forward("pending", "processing")
    assert refund_moves_forward("pending", "completed")  # processing notice skipped or still to come
    assert refund_moves_forward("processing", "failed")
    assert not refund_moves_forward("processing", "processing")  # a duplicate
    assert not refund_moves_forward("completed", "processing")  # late, out of order
    assert not refund_moves_forward("completed", "failed")  # both final
    assert not refund_moves_forward("failed", "completed")
    assert not refund_moves_forward(None, "completed")  # nothing was requested
    assert refund_predecessors("completed") == ["pending", "processing"]
    assert refund_predecessors("pending") == []
