"""Payloads of the events booking-rpc publishes, exactly the seed's JSON shapes.

`event_type`, `event_id` and `occurred_at` are added when the row is written: by `events.outbox.enqueue` for
events made in Python, by SQL for those the statements and the booking trigger write (`reservations.hold`,
`reservations.expire_batch`, migrations 0013/0021). Tests hold every path to these models' own JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from booking_rpc.models.common import Money


class EventPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: ClassVar[str]
    aggregate_type: ClassVar[str]


class ReservationFacts(EventPayload):
    """What reservation.created and reservation.expired start with (not an event of its own)."""

    aggregate_type = "reservation"
    reservation_id: UUID
    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID


class BookingFacts(EventPayload):
    """What the booking's lifecycle events start with (not an event of its own)."""

    aggregate_type = "booking"
    booking_id: UUID
    reference_code: str
    user_id: UUID
    pet_id: UUID
    clinic_id: UUID


class RefundFacts(EventPayload):
    """What the refund events start with (not an event of its own)."""

    aggregate_type = "booking"  # ordered with the booking's other events
    payment_id: UUID
    booking_id: UUID
    external_reference: str | None
    refund_amount: Money
    currency: str


class ReservationCreated(ReservationFacts):
    event_type = "reservation.created"
    expires_at: dt.datetime
    created_at: dt.datetime


class ReservationExpired(ReservationFacts):
    event_type = "reservation.expired"
    expired_at: dt.datetime


class ReservationCancelled(EventPayload):
    event_type = "reservation.cancelled"
    aggregate_type = "reservation"
    reservation_id: UUID
    user_id: UUID
    slot_id: UUID
    cancelled_at: dt.datetime


class WaitlistOffered(EventPayload):
    """A unit of a slot freed and the first waiter got a real hold on it: confirm it with `lock_id` before
    `expires_at` (booking.reservation.confirm), or it expires and the next waiter is offered."""

    event_type = "waitlist.offered"
    aggregate_type = "reservation"  # after the hold's reservation.created
    entry_id: UUID
    user_id: UUID
    pet_id: UUID
    service_id: UUID
    slot_id: UUID
    slot_date: dt.date
    slot_time: dt.time
    starts_at: dt.datetime
    reservation_id: UUID
    lock_id: str
    expires_at: dt.datetime
    offered_at: dt.datetime


class BookingConfirmed(BookingFacts):
    event_type = "booking.confirmed"
    service_id: UUID
    slot_date: dt.date
    slot_time: dt.time
    amount: Money
    created_at: dt.datetime


class BookingCancelled(BookingFacts):
    event_type = "booking.cancelled"
    cancellation_reason: str
    refund_amount: Money
    refund_status: str | None
    cancelled_at: dt.datetime


class BookingCompleted(BookingFacts):
    event_type = "booking.completed"
    service_id: UUID
    service_name: str
    completed_at: dt.datetime


class BookingRescheduled(EventPayload):
    """A booking moved to another slot (its status, payment and reference code unchanged)."""

    event_type = "booking.rescheduled"
    aggregate_type = "booking"
    booking_id: UUID
    reference_code: str
    user_id: UUID
    clinic_id: UUID
    previous_slot_id: UUID
    previous_service_id: UUID
    previous_slot_date: dt.date
    previous_slot_time: dt.time
    new_slot_id: UUID
    new_service_id: UUID
    new_slot_date: dt.date
    new_slot_time: dt.time
    booking_time: dt.datetime
    reason: str | None
    rescheduled_by: UUID
    rescheduled_by_role: str
    rescheduled_at: dt.datetime


class BookingStatusChanged(EventPayload):
    """Written by the bookings table trigger (sql/migrations); modelled here for the contract."""

    event_type = "booking.status_changed"
    aggregate_type = "booking"
    booking_id: UUID
    reference_code: str
    previous_status: str
    new_status: str
    changed_at: dt.datetime


class BookingCreated(BookingFacts):
    """Written by the bookings table trigger (sql/migrations); modelled here for the contract."""

    event_type = "booking.created"
    service_id: UUID
    amount: Money
    status: str
    created_at: dt.datetime


class PaymentProcessed(EventPayload):
    event_type = "payment.processed"
    aggregate_type = "booking"  # ordered with the booking's other events
    payment_id: UUID
    booking_id: UUID
    amount: Money
    currency: str
    payment_method: str
    status: str
    processed_at: dt.datetime


class ReviewSubmitted(EventPayload):
    event_type = "review.submitted"
    aggregate_type = "booking"
    review_id: UUID
    booking_id: UUID
    user_id: UUID
    clinic_id: UUID
    service_id: UUID
    rating: int
    submitted_at: dt.datetime


class PaymentRefundRequested(RefundFacts):
    """A refund is owed on a booking's payment: the booking was cancelled or rejected after it was paid, or a
    payment succeeded for a booking already cancelled (never re-booked). The payment service pays it out and
    reports back with payment.status_changed."""

    event_type = "payment.refund_requested"
    reason: str
    requested_at: dt.datetime


class PaymentRefundProcessed(RefundFacts):
    """A requested refund reached its final state at the payment service: `completed` (money back,
    `refunded_at`) or `failed` (staff find it with booking.payments.find)."""

    event_type = "payment.refund_processed"
    refund_status: str
    refunded_at: dt.datetime | None
    processed_at: dt.datetime


class ReminderDue(EventPayload):
    event_type = "booking.reminder.due"
    aggregate_type = "booking"
    reminder_id: UUID
    booking_id: UUID
    reference_code: str
    user_id: UUID
    reminder_type: str
    booking_time: dt.datetime | None
    scheduled_time: dt.datetime


PUBLISHED_EVENTS: list[type[EventPayload]] = [
    ReservationCreated,
    ReservationExpired,
    ReservationCancelled,
    WaitlistOffered,
    BookingCreated,
    BookingConfirmed,
    BookingStatusChanged,
    BookingCancelled,
    BookingCompleted,
    BookingRescheduled,
    PaymentProcessed,
    ReviewSubmitted,
    PaymentRefundRequested,
    PaymentRefundProcessed,
    ReminderDue,
]
