"""Payloads and replies of bookings, payments, reviews, attachments and notifications."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

from booking_rpc.models.common import ActorRequest, Model, Money

BookingStatus = Literal["pending_approval", "confirmed", "in-progress", "completed", "cancelled", "no-show"]
PaymentStatus = Literal["pending", "processing", "success", "failed", "refunded"]


# --- confirm


class PaymentIn(Model):
    method: str = Field(min_length=1, max_length=50)
    external_reference: str | None = Field(None, min_length=1, max_length=100)
    status: Literal["pending", "success"] = "pending"
    details: dict[str, Any] | None = None


class ConfirmRequest(ActorRequest):
    """Turn a live hold into a booking: its owner (or an admin/service) with the hold's `lock_id`."""

    reservation_id: UUID
    lock_id: str = Field(min_length=1, max_length=100)
    user_id: UUID
    payment: PaymentIn | None = None
    notes: str | None = Field(None, max_length=5000)


class PaymentOut(BaseModel):
    id: UUID
    external_reference: str | None
    amount: Money
    currency: str
    payment_method: str
    status: PaymentStatus
    paid_at: dt.datetime | None
    refund_status: str | None
    refund_amount: Money | None
    refunded_at: dt.datetime | None


class BookingOut(BaseModel):
    id: UUID
    reservation_id: UUID | None
    reference_code: str
    user_id: UUID
    pet_id: UUID
    clinic_id: UUID
    service_id: UUID
    slot_id: UUID
    payment_id: UUID | None
    amount: Money
    status: BookingStatus
    cancellation_reason: str | None
    notes: str | None
    pet_snapshot: dict[str, Any]
    service_snapshot: dict[str, Any]
    booking_time: dt.datetime | None
    slot_date: dt.date
    slot_start_time: dt.time
    slot_end_time: dt.time
    ends_at: dt.datetime
    payment: PaymentOut | None
    reschedule_count: int = Field(0, description="how many times the booking was moved to another slot")
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


# --- find

BookingSort = Literal["slot_time", "created_at"]


def _id_alias_in_schema(schema: dict[str, Any]) -> None:
    """Publish `id`, the alias of `booking_id`, so a client validating against the schema may send either."""
    props = schema["properties"]
    props["id"] = {**props["booking_id"], "title": "Id", "description": "Alias of `booking_id` (give one of them)."}


class BookingGetRequest(ActorRequest):
    """One booking by `booking_id` (alias `id`) or by `reference_code` (any case); reply: the booking.

    Users see only their own bookings, clinic staff only their clinic's; another's is NOT_FOUND.
    """

    model_config = ConfigDict(json_schema_extra=_id_alias_in_schema)

    booking_id: UUID | None = Field(None, validation_alias=AliasChoices("booking_id", "id"))
    reference_code: str | None = Field(None, min_length=1, max_length=20)

    @model_validator(mode="after")
    def _one_key(self) -> BookingGetRequest:
        if (self.booking_id is None) == (self.reference_code is None):
            raise ValueError("give exactly one of booking_id (or id) and reference_code")
        return self


class BookingFindRequest(ActorRequest):
    """A page of bookings by criteria (reply: always a page; one booking by key is `booking.booking.get`).

    `booking_id` (alias `id`) or `reference_code` narrows the page to that booking (one item, or none when it
    does not exist or is not yours) and is not combined with the other criteria.
    Users see only their own bookings, clinic staff only their clinic's.
    `sort`: `slot_time` (earliest first) or `created_at` (newest first); keyset `cursor`; `limit` ≤ 100.
    """

    model_config = ConfigDict(json_schema_extra=_id_alias_in_schema)

    booking_id: UUID | None = Field(None, validation_alias=AliasChoices("booking_id", "id"))
    reference_code: str | None = Field(None, min_length=1, max_length=20)
    user_id: UUID | None = None
    clinic_id: UUID | None = None
    status: list[BookingStatus] | None = Field(None, max_length=6)
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    upcoming_only: bool = False
    sort: BookingSort = "slot_time"
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
    include_total: bool = False

    @model_validator(mode="after")
    def _one_lookup(self) -> BookingFindRequest:
        if self.booking_id is not None and self.reference_code is not None:
            raise ValueError("give either booking_id (or id) or reference_code, not both")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        if self.booking_id is not None or self.reference_code is not None:
            criteria = ("user_id", "clinic_id", "status", "date_from", "date_to", "cursor")
            given = [name for name in criteria if getattr(self, name) is not None] + (
                ["upcoming_only"] if self.upcoming_only else []
            )
            if given:
                raise ValueError(f"booking_id / reference_code is not combined with {', '.join(given)}")
        return self


class BookingPage(BaseModel):
    items: list[BookingOut]
    next_cursor: str | None
    total: int | None = None


# --- update / cancel / approve / reject


def _not_blank(reason: str) -> str:
    if not reason.strip():
        raise ValueError("reason must not be blank")
    return reason


# Why a booking is cancelled or rejected: the same rule for both (required, not blank).
Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_not_blank)]


class BookingUpdateRequest(ActorRequest):
    """Move a booking through the state machine (clinic staff of its clinic, or an admin/service)."""

    booking_id: UUID
    status: BookingStatus
    notes: str | None = Field(None, max_length=5000)


class BookingCancelRequest(ActorRequest):
    """Cancel a booking: its owner, staff of its clinic, or an admin/service. `reason` is required."""

    booking_id: UUID
    reason: Reason


class BookingRescheduleRequest(ActorRequest):
    """Move a booking to slot `slot_id` of its clinic: same service, or another service of the clinic with the
    same price. Its owner or staff of its clinic (admins/services too). `expected_slot_id`: refuse (CONFLICT)
    when the booking is no longer on that slot (a compare-and-swap for clients racing each other)."""

    booking_id: UUID
    slot_id: UUID
    expected_slot_id: UUID | None = None
    reason: str | None = Field(None, max_length=2000)


class BookingApproveRequest(ActorRequest):
    booking_id: UUID
    notes: str | None = Field(None, max_length=5000)


class BookingRejectRequest(ActorRequest):
    """Decline a booking awaiting approval (staff of its clinic, or an admin/service). `reason` is required."""

    booking_id: UUID
    reason: Reason


# --- payments (consumed event)


class PaymentStatusChanged(BaseModel):
    """`payment.status_changed` from the payment service; extra envelope fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    event_type: str | None = None
    event_id: UUID | None = None
    payment_id: UUID | None = None
    external_reference: str = Field(min_length=1, max_length=100)
    previous_status: str | None = None
    new_status: PaymentStatus
    changed_at: dt.datetime | None = None
    # the refund's progress (domain.refunds): new_status 'refunded' alone means the refund completed
    refund_status: Literal["processing", "completed", "failed"] | None = None


RefundStatus = Literal["pending", "processing", "completed", "failed"]


class PaymentsFindRequest(ActorRequest):
    """Payments with their bookings, most recently changed first (staff: their clinic's; admins: any).

    Filter by `refund_status` (e.g. `["failed"]`: refunds that need a person) and payment `status`.
    """

    clinic_id: UUID | None = None
    refund_status: list[RefundStatus] | None = Field(None, min_length=1, max_length=4)
    status: list[PaymentStatus] | None = Field(None, min_length=1, max_length=5)
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class PaymentRecord(PaymentOut):
    booking_id: UUID
    reference_code: str
    user_id: UUID
    clinic_id: UUID
    updated_at: dt.datetime | None


class PaymentPage(BaseModel):
    items: list[PaymentRecord]
    next_cursor: str | None


# --- reviews


class ReviewCreateRequest(ActorRequest):
    """Review a completed booking: only its user, once."""

    booking_id: UUID
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=5000)
    ratings_breakdown: dict[str, int] = Field(default_factory=dict, max_length=20)
    attachments: list[dict[str, Any]] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _breakdown_range(self) -> ReviewCreateRequest:
        for key, value in self.ratings_breakdown.items():
            if not 1 <= value <= 5:
                raise ValueError(f"ratings_breakdown.{key} must be between 1 and 5")
        return self


class ReviewOut(BaseModel):
    id: UUID
    booking_id: UUID
    user_id: UUID
    clinic_id: UUID
    service_id: UUID
    rating: int
    comment: str | None
    attachments: list[dict[str, Any]]
    ratings_breakdown: dict[str, int]
    is_verified: bool
    is_published: bool
    created_at: dt.datetime | None


# --- attachments


class AttachmentAddRequest(ActorRequest):
    booking_id: UUID
    file_name: str = Field(min_length=1, max_length=255)
    file_url: str = Field(min_length=1, max_length=2000)
    file_type: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=2000)
    file_size: int | None = Field(None, ge=0)
    is_public: bool = False


class AttachmentFindRequest(ActorRequest):
    booking_id: UUID


class AttachmentOut(BaseModel):
    id: UUID
    booking_id: UUID
    file_name: str
    file_url: str
    file_type: str | None
    description: str | None
    file_size: int | None
    is_public: bool
    uploaded_at: dt.datetime | None
    created_at: dt.datetime | None


class AttachmentList(BaseModel):
    items: list[AttachmentOut]


# --- notifications


class NotificationFindRequest(ActorRequest):
    """A user's notifications, newest first. `user_id` defaults to the actor."""

    user_id: UUID | None = None
    unread_only: bool = False
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class NotificationOut(BaseModel):
    id: UUID
    user_id: UUID
    booking_id: UUID | None
    type: str
    title: str
    content: str | None
    metadata: dict[str, Any]
    is_read: bool
    read_at: dt.datetime | None
    delivery_status: str
    created_at: dt.datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None
    unread_count: int


class NotificationMarkReadRequest(ActorRequest):
    """Mark some (`ids`) or all (`all: true`) of the actor's (or `user_id`'s) notifications read."""

    user_id: UUID | None = None
    ids: list[UUID] | None = Field(None, min_length=1, max_length=500)
    all: bool = False

    @model_validator(mode="after")
    def _what(self) -> NotificationMarkReadRequest:
        if (self.ids is None) == (not self.all):
            raise ValueError("give either ids or all=true")
        return self


class MarkReadResult(BaseModel):
    updated: int
    unread_count: int
