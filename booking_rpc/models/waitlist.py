"""Payloads and replies of the waitlist: waiting for a full slot, or for any slot of a service on a date."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from booking_rpc.models.common import ActorRequest

WaitlistStatus = Literal["waiting", "offered", "booked", "declined", "expired", "left"]


class WaitlistJoinRequest(ActorRequest):
    """Wait for slot `slot_id`, or for any slot of `service_id` on `date` (clinic-local); `user_id` must be
    the actor (admins/services: anyone). Joining twice answers the same entry. When the target has a free
    unit right now, the entry is offered a hold at once (status `offered`, with `reservation_id` and
    `lock_id`): confirm it with booking.reservation.confirm as any hold."""

    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID | None = None
    date: dt.date | None = None

    @model_validator(mode="after")
    def _one_target(self) -> WaitlistJoinRequest:
        if (self.slot_id is None) == (self.date is None):
            raise ValueError("give exactly one of slot_id and date")
        return self


class WaitlistLeaveRequest(ActorRequest):
    """Stop waiting (the entry's user, staff of its clinic, or an admin). An offered entry keeps its hold."""

    entry_id: UUID


class WaitlistFindRequest(ActorRequest):
    """Entries in queue order: a user's own (`user_id` defaults to the actor), or, for clinic staff, their
    clinic's by `slot_id` or by `service_id` (+ `date`). `active_only`: waiting or holding a live offer."""

    user_id: UUID | None = None
    slot_id: UUID | None = None
    service_id: UUID | None = None
    date: dt.date | None = None
    active_only: bool = True
    limit: int = Field(50, ge=1, le=500)


class WaitlistEntryOut(BaseModel):
    id: UUID
    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID | None
    date: dt.date | None
    status: WaitlistStatus
    position: int | None = Field(description="place in its target's queue while waiting (1 = next)")
    reservation_id: UUID | None
    lock_id: str | None = Field(description="the offered hold's lock_id (to its user only)")
    expires_at: dt.datetime | None
    offered_at: dt.datetime | None
    created_at: dt.datetime


class WaitlistPage(BaseModel):
    items: list[WaitlistEntryOut]
