"""Handlers per aggregate. `build_router()` is the one place that decides what the service answers."""

from __future__ import annotations

import importlib
import importlib.util

from booking_rpc.router import Router

# Each module exposes `router`; a module not written yet is simply absent from this list.
HANDLER_MODULES = [
    "system",
    "services",
    "slots",
    "reservations",
    "bookings",
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
        if importlib.util.find_spec(f"booking_rpc.handlers.{name}") is None:
            continue  # TODO(lead): remove once every module has landed
        module = importlib.import_module(f"booking_rpc.handlers.{name}")
        app.include(module.router)
    return app
