"""The money split of a booking: platform fee, tax (inclusive) and the clinic's share.

Every amount is a `Decimal` rounded half-even to cents (`to_cents`). The fee and the tax are each rounded
once; the clinic's share is what is left (`total - fee - tax`), so the three always add up to the total
exactly and no cent appears or vanishes in rounding. If fee + tax would exceed the total (absurd rates),
the tax is capped so the clinic's share is never negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from booking_rpc.models.common import to_cents

HUNDRED = Decimal(100)
ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class Split:
    total: Decimal
    platform_fee: Decimal
    tax: Decimal
    clinic_amount: Decimal


def percent_of(amount: Decimal, percent: Decimal) -> Decimal:
    """`percent`% of `amount`, in cents, half-even."""
    return to_cents(amount * percent / HUNDRED)


def split(total: Decimal, fee_percent: Decimal, tax_percent: Decimal) -> Split:
    """Split `total` (≥ 0) into fee + tax + clinic share that add up to it exactly."""
    if total < 0:
        raise ValueError("a total cannot be negative")
    if not (0 <= fee_percent <= HUNDRED and 0 <= tax_percent <= HUNDRED):
        raise ValueError("percentages must be between 0 and 100")
    total = to_cents(total)
    fee = min(percent_of(total, fee_percent), total)
    tax = min(percent_of(total, tax_percent), total - fee)
    return Split(total=total, platform_fee=fee, tax=tax, clinic_amount=total - fee - tax)
