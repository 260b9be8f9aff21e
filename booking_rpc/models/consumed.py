"""Events other services send us (NestJS `emit`), as the seed defines them.

Extra fields are ignored (a producer may add some), but the ones we use are validated: a malformed
event is refused by the router, logged and counted, and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from booking_rpc.models.common import Money


class ConsumedEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event_type: str | None = None
    updated_at: dt.datetime = Field(description="When the owner changed it: older updates never win")


class UserUpdated(ConsumedEvent):
    user_id: UUID
    email: str | None = None
    full_name: str | None = None
    phone_number: str | None = None


class PetUpdated(ConsumedEvent):
    pet_id: UUID
    name: str | None = None
    species: str | None = None
    breed: str | None = None
    owner_id: UUID | None = None


class ClinicUpdated(ConsumedEvent):
    clinic_id: UUID
    name: str | None = None
    address: str | None = None
    phone_number: str | None = None
    timezone: str | None = Field(None, description="IANA zone of the clinic's wall-clock slot times")


class ServiceUpdated(ConsumedEvent):
    service_id: UUID
    clinic_id: UUID
    name: str = Field(min_length=1, max_length=255)
    price: Money = Field(ge=0, max_digits=12, decimal_places=2)
    duration_minutes: int = Field(gt=0)
    is_available: bool = True
    # the booking window (booking.services.upsert's fields); absent = keep the current value
    min_notice_minutes: int | None = Field(None, ge=0, le=366 * 24 * 60)
    max_advance_days: int | None = Field(None, ge=0, le=3660)
    cancel_cutoff_hours: int | None = Field(None, ge=0, le=24 * 366)


CONSUMED_EVENTS: dict[str, type[ConsumedEvent]] = {
    "user.updated": UserUpdated,
    "pet.updated": PetUpdated,
    "clinic.updated": ClinicUpdated,
    "service.updated": ServiceUpdated,
}
