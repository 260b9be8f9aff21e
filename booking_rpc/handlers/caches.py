"""Consumed events: keep our copies of users, pets, clinics and services fresh.

Idempotent and order-safe: a cache row is replaced only by a strictly newer `updated_at`, so a replayed
or late event changes nothing. Bookings that have not started yet get the new data in their snapshots;
past bookings keep the snapshot they were made with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

from booking_rpc.context import Context
from booking_rpc.models.consumed import CONSUMED_EVENTS, ConsumedEvent
from booking_rpc.router import Router

router = Router()
log = structlog.get_logger(__name__)

# events applied vs ignored as stale, by event type (app.py hands it to the metrics collector)
CONSUMED: Counter[tuple[str, str]] = Counter()


# Each consumed event (models.consumed.CONSUMED_EVENTS): the statement that applies it and the event's
# fields that are the statement's parameters, in their order.
APPLIED_BY: dict[str, tuple[str, tuple[str, ...]]] = {
    "user.updated": ("caches.upsert_user", ("user_id", "email", "full_name", "phone_number", "updated_at")),
    "pet.updated": ("caches.upsert_pet", ("pet_id", "name", "species", "breed", "owner_id", "updated_at")),
    "clinic.updated": (
        "caches.upsert_clinic",
        ("clinic_id", "name", "address", "phone_number", "timezone", "updated_at"),
    ),
    "service.updated": (
        "caches.upsert_service",
        (
            "service_id",
            "clinic_id",
            "name",
            "price",
            "duration_minutes",
            "is_available",
            "updated_at",
            "min_notice_minutes",
            "max_advance_days",
            "cancel_cutoff_hours",
        ),
    ),
}


def _applier(event_type: str) -> Callable[[ConsumedEvent, Context], Awaitable[None]]:
    statement, fields = APPLIED_BY[event_type]

    async def apply(event: ConsumedEvent, ctx: Context) -> None:
        """Run the event's upsert of newer data and count it applied or stale: the statement returns no row,
        or a row whose `applied` is false, when what we hold is newer."""
        async with ctx.transaction() as conn:
            row = await conn.fetchrow(ctx.sql[statement], *[getattr(event, name) for name in fields])
        applied = row is not None and row.get("applied", True)
        CONSUMED[(event_type, "applied" if applied else "stale")] += 1

    apply.__name__ = apply.__qualname__ = event_type.replace(".", "_")
    return apply


for _event_type, _model in CONSUMED_EVENTS.items():
    router.event(_event_type, payload=_model)(_applier(_event_type))
