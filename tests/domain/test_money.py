"""The fee/tax/clinic split: exact, half-even, never negative."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from booking_rpc.domain.money import split

prices = st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False)
rates = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False)


@given(prices, rates, rates)
def test_parts_add_up(total: Decimal, fee: Decimal, tax: Decimal) -> None:
    s = split(total, fee, tax)
    assert s.platform_fee + s.clinic_amount + s.tax == s.total == total
    assert min(s.platform_fee, s.clinic_amount, s.tax) >= 0
    for part in (s.platform_fee, s.clinic_amount, s.tax):
        assert part == part.quantize(Decimal("0.01"))


def test_examples_half_even() -> None:
    s = split(Decimal("150000.00"), Decimal("10"), Decimal("11"))
    assert (s.platform_fee, s.tax, s.clinic_amount) == (Decimal("15000.00"), Decimal("16500.00"), Decimal("118500.00"))
    # 0.25 * 10 % = 0.025 -> 0.02 (half-even), 0.35 * 10 % = 0.035 -> 0.04
    assert split(Decimal("0.25"), Decimal("10"), Decimal("0")).platform_fee == Decimal("0.02")
    assert split(Decimal("0.35"), Decimal("10"), Decimal("0")).platform_fee == Decimal("0.04")
    # absurd rates never make the clinic's share negative
    s = split(Decimal("10.00"), Decimal("60"), Decimal("60"))
    assert (s.platform_fee, s.tax, s.clinic_amount) == (Decimal("6.00"), Decimal("4.00"), Decimal("0.00"))


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        split(Decimal("-1"), Decimal("10"), Decimal("10"))
    with pytest.raises(ValueError):
        split(Decimal("1"), Decimal("101"), Decimal("10"))
