"""Payloads and replies of reservations (temporary holds on slot capacity)."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from booking_rpc.models.common import ActorRequest

ReservationStatus = Literal["pending", "confirmed", "cancelled", "expired"]


class ReservationCreateRequest(ActorRequest):
    """Hold one unit of a slot for `hold_ttl_seconds`. `user_id` must be the actor (admins/services: anyone).

    The same `idempotency_key` from the same user returns the first reservation (as it is now) instead of
    taking a second unit; the same key with another pet/service/slot is `IDEMPOTENCY_CONFLICT`.
    """

    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class ReservationOut(BaseModel):
    id: UUID
    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID
    lock_id: str
    status: ReservationStatus
    expires_at: dt.datetime
    idempotency_key: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class ReservationCancelRequest(ActorRequest):
    """Release a live hold early: its owner (or an admin/service) with the hold's `lock_id`.

    Cancelling a hold that is already cancelled answers the cancelled reservation again (idempotent).
    """

    reservation_id: UUID
    lock_id: str = Field(min_length=1, max_length=100)
