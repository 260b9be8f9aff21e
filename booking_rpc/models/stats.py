"""Reporting replies."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from booking_rpc.models.common import ActorRequest, Money


class CompletionRatesRequest(ActorRequest):
    """Monthly completion/cancellation rates from the `booking_completion_rates` view (refreshed by a job)."""

    months: int = 12


class CompletionRate(BaseModel):
    month: dt.datetime
    total_bookings: int
    completed_bookings: int
    cancelled_bookings: int
    no_show_bookings: int
    completion_rate: Money
    cancellation_rate: Money


class CompletionRates(BaseModel):
    items: list[CompletionRate]
