"""The booking state machine: one table of every legal (from, to) transition and the actions that may take it.

    pending_approval --approve--> confirmed            (staff of the clinic; requires_approval services)
    pending_approval --reject/cancel--> cancelled      (staff reject / owner withdraws)
    confirmed --update--> in-progress --update--> completed
    confirmed --update--> no-show                      (only once the slot has started)
    confirmed | in-progress --cancel--> cancelled      (booking.booking.cancel, never a plain update)

Anything else is `ILLEGAL_TRANSITION` (409) naming both states. `completed`, `cancelled` and `no-show`
are final.
"""

from __future__ import annotations

from typing import Literal

from booking_rpc.errors import RpcError

BookingStatus = Literal["pending_approval", "confirmed", "in-progress", "completed", "cancelled", "no-show"]
Action = Literal["update", "cancel", "approve", "reject"]

STATUSES: tuple[BookingStatus, ...] = (
    "pending_approval",
    "confirmed",
    "in-progress",
    "completed",
    "cancelled",
    "no-show",
)

TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    ("pending_approval", "confirmed"): frozenset({"approve"}),
    ("pending_approval", "cancelled"): frozenset({"reject", "cancel"}),
    ("confirmed", "in-progress"): frozenset({"update"}),
    ("in-progress", "completed"): frozenset({"update"}),
    ("confirmed", "no-show"): frozenset({"update"}),
    ("confirmed", "cancelled"): frozenset({"cancel"}),
    ("in-progress", "cancelled"): frozenset({"cancel"}),
}

FINAL: frozenset[str] = frozenset({"completed", "cancelled", "no-show"})
# Statuses that hold a unit of the slot's capacity.
ACTIVE: frozenset[str] = frozenset({"pending_approval", "confirmed", "in-progress", "completed", "no-show"})


def is_allowed(current: str, target: str, action: str) -> bool:
    return action in TRANSITIONS.get((current, target), frozenset())


def check_transition(current: str, target: str, action: str) -> None:
    """Raise ILLEGAL_TRANSITION unless `action` may move a booking from `current` to `target`."""
    if is_allowed(current, target, action):
        return
    hint = ""
    if target == "cancelled" and action == "update" and (current, target) in TRANSITIONS:
        hint = " (use booking.booking.cancel)"
    raise RpcError(
        "ILLEGAL_TRANSITION",
        f"A booking cannot go from '{current}' to '{target}'{hint}",
        {"from": current, "to": target, "action": action},
    )
