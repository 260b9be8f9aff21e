"""The refund policy of a cancelled booking.

- cancelled at least `full_refund_hours` before the slot starts: 100 % of what was paid;
- later, but before the start: `late_refund_percent` % of what was paid;
- once the slot has started: nothing.

"Paid" is the payment's amount when it succeeded, else 0 (nothing to give back yet; a payment that
succeeds after the cancellation is refunded in full by the payment-event handler). The result is rounded
half-even to cents and never exceeds what was paid. Times are the database clock's, passed in.

Below it, the refund's lifecycle once requested (forward-only, see REFUND_RANK).
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


# --- the refund's own lifecycle, as the payment service reports it
#
#     pending (requested on cancel) --> processing --> completed | failed (final)
#
# Forward only: an event that would not move a refund forward (a duplicate, or one that arrives after a
# later state: processing after completed) changes nothing, so delivery may repeat and reorder. `pending`
# may jump straight to a final state (the provider's processing notice may never come, or come last).

REFUND_RANK: dict[str, int] = {"pending": 0, "processing": 1, "completed": 2, "failed": 2}
REFUND_FINAL: frozenset[str] = frozenset({"completed", "failed"})


def refund_moves_forward(current: str | None, new: str) -> bool:
    """Whether a refund in `current` (None: none was requested) may move to `new`."""
    if current is None or current not in REFUND_RANK:
        return False
    return REFUND_RANK[new] > REFUND_RANK[current]


def refund_predecessors(new: str) -> list[str]:
    """The states a refund may reach `new` from (the compare-and-swap's guard)."""
    return [s for s in REFUND_RANK if refund_moves_forward(s, new)]
