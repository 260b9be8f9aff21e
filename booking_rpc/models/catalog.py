"""Payloads and replies of the catalogue: services, slots, availability."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from booking_rpc.models.common import ActorRequest, Model, Money

SlotStatus = Literal["available", "booked", "blocked"]
UnavailableReason = Literal[
    "SERVICE_NOT_BOOKABLE",
    "AVAILABILITY_EXCEPTION",
    "SLOT_BLOCKED",
    "SLOT_FULL",
    "SLOT_IN_PAST",
    "TOO_SOON",
    "TOO_FAR_AHEAD",
]


class AvailabilityException(Model):
    """One entry of `services.availability_exceptions` (a JSON array): days the service is not offered.

    Either a single day or an inclusive date range, with an optional reason:

        [{"date": "2026-12-25", "reason": "holiday"},
         {"start_date": "2026-12-28", "end_date": "2026-12-31", "reason": "inventory"}]

    Slots on such a day stay in the catalogue but cannot be held (`AVAILABILITY_EXCEPTION`).
    """

    date: dt.date | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    reason: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_shape(self) -> AvailabilityException:
        if self.date is not None:
            if self.start_date is not None or self.end_date is not None:
                raise ValueError("give either date or start_date/end_date, not both")
        elif self.start_date is None or self.end_date is None:
            raise ValueError("give date, or both start_date and end_date")
        elif self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


# --- services


class ServiceOut(BaseModel):
    id: UUID
    clinic_id: UUID
    name: str
    description: str | None
    price: Money
    duration_minutes: int
    requires_approval: bool
    is_available: bool
    availability_exceptions: list[AvailabilityException]
    min_notice_minutes: int
    max_advance_days: int | None
    cancel_cutoff_hours: int
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class ServiceUpsertRequest(ActorRequest):
    """Create (no `id`, or an unknown one) or update a service; staff of its clinic or an admin."""

    id: UUID | None = None
    clinic_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    price: Money = Field(ge=0, max_digits=12, decimal_places=2)
    duration_minutes: int = Field(30, gt=0, le=24 * 60)
    requires_approval: bool = False
    is_available: bool = True
    availability_exceptions: list[AvailabilityException] = Field(default_factory=list, max_length=1000)
    min_notice_minutes: int = Field(
        0, ge=0, le=366 * 24 * 60, description="a hold must start at least this many minutes ahead (real time)"
    )
    max_advance_days: int | None = Field(
        None, ge=0, le=3660, description="horizon: slots at most this many clinic-local days ahead; null = none"
    )
    cancel_cutoff_hours: int = Field(
        0, ge=0, le=24 * 366, description="owners may not cancel closer than this to the start (staff still may)"
    )


class ServicesFindRequest(ActorRequest):
    """A clinic's services by name, keyset paginated; open to anyone."""

    clinic_id: UUID
    available_only: bool = False
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None


class ServicesPage(BaseModel):
    items: list[ServiceOut]
    next_cursor: str | None


# --- slots


class SlotOut(BaseModel):
    id: UUID
    service_id: UUID
    staff_id: UUID | None
    slot_date: dt.date
    slot_start_time: dt.time
    slot_end_time: dt.time
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: SlotStatus
    capacity: int
    booked_count: int
    remaining: int


class SlotsFindRequest(ActorRequest):
    """Slots of a service in a date range (inclusive), ordered by date and time; open to anyone."""

    service_id: UUID
    date_from: dt.date
    date_to: dt.date
    staff_id: UUID | None = None
    only_available: bool = False
    limit: int = Field(100, ge=1, le=500)
    cursor: str | None = None

    @model_validator(mode="after")
    def _range(self) -> SlotsFindRequest:
        if self.date_to < self.date_from:
            raise ValueError("date_to must not be before date_from")
        return self


class SlotsPage(BaseModel):
    items: list[SlotOut]
    next_cursor: str | None


class TimeWindow(Model):
    """Daily opening hours in the clinic's wall-clock time."""

    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _order(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class SlotsGenerateRequest(ActorRequest):
    """Make slots from a weekly schedule in the clinic's time zone; running it twice adds nothing."""

    service_id: UUID
    date_from: dt.date
    date_to: dt.date
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7], min_length=1, max_length=7)
    windows: list[TimeWindow] = Field(min_length=1, max_length=24)
    slot_minutes: int | None = Field(None, gt=0, le=24 * 60, description="default: the service's duration")
    step_minutes: int | None = Field(None, gt=0, le=24 * 60, description="default: the slot length")
    capacity: int = Field(1, gt=0, le=10_000)
    staff_id: UUID | None = None

    @model_validator(mode="after")
    def _check(self) -> SlotsGenerateRequest:
        if self.date_to < self.date_from:
            raise ValueError("date_to must not be before date_from")
        if (self.date_to - self.date_from).days > 366:
            raise ValueError("at most 367 days per request")
        if any(d < 1 or d > 7 for d in self.weekdays):
            raise ValueError("weekdays are ISO numbers, 1 (Monday) to 7 (Sunday)")
        return self


class SlotsGenerateReply(BaseModel):
    service_id: UUID
    timezone: str
    generated: int = Field(description="slots the schedule describes")
    created: int = Field(description="of those, new rows (the rest existed already)")


class SlotBlockRequest(ActorRequest):
    slot_id: UUID


# --- availability


class AvailabilityCheckRequest(ActorRequest):
    """Availability of one slot (`slot_id`) or of a service on a date (`date`); open to anyone."""

    service_id: UUID
    slot_id: UUID | None = None
    date: dt.date | None = None

    @model_validator(mode="after")
    def _one(self) -> AvailabilityCheckRequest:
        if (self.slot_id is None) == (self.date is None):
            raise ValueError("give exactly one of slot_id and date")
        return self


class SlotAvailability(BaseModel):
    slot_id: UUID
    slot_date: dt.date
    slot_start_time: dt.time
    slot_end_time: dt.time
    starts_at: dt.datetime
    available: bool
    reason: UnavailableReason | None
    remaining: int


class AvailabilityReply(BaseModel):
    service_id: UUID
    available: bool
    reason: UnavailableReason | None = None
    message: str | None = None
    remaining: int = Field(description="units that can still be held (the slot's, or the date's total)")
    slot_id: UUID | None = None
    date: dt.date | None = None
    slots: list[SlotAvailability] | None = None
