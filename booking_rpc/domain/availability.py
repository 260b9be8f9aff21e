"""Why a slot cannot take a hold now, from the fields of a `slots.diagnose` row (shared by the availability
check and the hold's refusal, so both name the same reason with the same message)."""

from __future__ import annotations

from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from booking_rpc.domain import windows
from booking_rpc.models.catalog import UnavailableReason


class Row(Protocol):
    """A row by column name (an asyncpg Record, a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


REASON_MESSAGES: dict[str, str] = {
    "SERVICE_NOT_BOOKABLE": "The service is not available for booking",
    "AVAILABILITY_EXCEPTION": "The service is not offered on this date",
    "SLOT_IN_PAST": "The slot has already started",
    "SLOT_BLOCKED": "The slot is blocked by the clinic",
    "SLOT_FULL": "The slot is fully booked",
    "TOO_SOON": "The slot starts sooner than the service's minimum notice",
    "TOO_FAR_AHEAD": "The slot is further ahead than the service's booking horizon",
}


def zone_or_utc(name: str | None) -> ZoneInfo:
    """The clinic's zone; UTC while the clinic is not cached (as the SQL reads it) or names no known zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def remaining_of(row: Row) -> int:
    """Units still free: holds past their TTL (`stale`) no longer count, given back or not."""
    return max(0, int(row["capacity"]) - int(row["booked_count"]) + int(row["stale"]))


def unavailable_reason(row: Row) -> UnavailableReason | None:
    """Why a slot (a `slots.diagnose` row) cannot take a hold now; None when it can."""
    if not row["service_available"]:
        return "SERVICE_NOT_BOOKABLE"
    if row["on_exception"]:
        return "AVAILABILITY_EXCEPTION"
    if row["in_past"]:
        return "SLOT_IN_PAST"
    window = windows.refusal(
        row["starts_at"],
        row["slot_date"],
        row["db_now"],
        zone_or_utc(row["timezone"]),
        min_notice_minutes=row["min_notice_minutes"],
        max_advance_days=row["max_advance_days"],
    )
    if window is not None:
        return window
    if row["status"] == "blocked":
        return "SLOT_BLOCKED"
    if remaining_of(row) <= 0:
        return "SLOT_FULL"
    return None
