"""Handlers per aggregate. `build_router()` is the one place that decides what the service answers."""

from __future__ import annotations

import importlib

from booking_rpc.router import Router

# Each module exposes `router`; the order does not matter (a pattern registered twice is an error).
HANDLER_MODULES = [
    "system",
    "services",
    "slots",
    "reservations",
    "reservations_confirm",
    "bookings.find",
    "bookings.update",
    "bookings.cancel",
    "bookings.approve",
    "bookings.reschedule",
    "waitlist",
    "payments",
    "reviews",
    "attachments",
    "notifications",
    "subscriptions",
    "caches",
    "stats",
]


def build_router() -> Router:
    app = Router()
    for name in HANDLER_MODULES:
        module = importlib.import_module(f"booking_rpc.handlers.{name}")
        app.include(module.router)
    return app
