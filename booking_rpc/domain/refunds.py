"""The refund policy of a cancelled booking.

- cancelled at least `full_refund_hours` before the slot starts: 100 % of what was paid;
- later, but before the start: `late_refund_percent` % of what was paid;
- once the slot has started: nothing.

"Paid" is the payment's amount when it succeeded, else 0 (nothing to give back yet; a payment that
succeeds after the cancellation is refunded in full by the payment-event handler). The result is rounded
half-even to cents and never exceeds what was paid. Times are the database clock's, passed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from booking_rpc.domain.money import HUNDRED, ZERO, percent_of
from booking_rpc.models.common import to_cents


@dataclass(frozen=True, slots=True)
class Refund:
    percent: Decimal
    amount: Decimal
    tier: str  # "full" | "late" | "none"


def refund_for(
    paid: Decimal,
    starts_at: dt.datetime,
    now: dt.datetime,
    *,
    full_refund_hours: float,
    late_refund_percent: Decimal,
) -> Refund:
    paid = to_cents(max(paid, ZERO))
    if now >= starts_at:
        return Refund(Decimal(0), ZERO, "none")
    if starts_at - now >= dt.timedelta(hours=full_refund_hours):
        percent, tier = HUNDRED, "full"
    else:
        percent, tier = min(max(late_refund_percent, Decimal(0)), HUNDRED), "late"
    return Refund(percent, min(percent_of(paid, percent), paid), tier)
