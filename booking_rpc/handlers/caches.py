"""Consumed events: keep our copies of users, pets, clinics and services fresh.

Idempotent and order-safe: a cache row is replaced only by a strictly newer `updated_at`, so a replayed
or late event changes nothing. Bookings that have not started yet get the new data in their snapshots;
past bookings keep the snapshot they were made with.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

from booking_rpc.context import Context
from booking_rpc.models.consumed import ClinicUpdated, PetUpdated, ServiceUpdated, UserUpdated
from booking_rpc.router import Router

router = Router()
log = structlog.get_logger(__name__)

# events applied vs ignored as stale, by event type (app.py hands it to the metrics collector)
CONSUMED: Counter[tuple[str, str]] = Counter()


async def _upsert(ctx: Context, event_type: str, statement: str, *args: Any) -> None:
    """Run one upsert of newer data and count the event applied or stale: the statement returns no row, or a
    row whose `applied` is false, when what we hold is newer."""
    async with ctx.transaction() as conn:
        row = await conn.fetchrow(ctx.sql[statement], *args)
    applied = row is not None and row.get("applied", True)
    CONSUMED[(event_type, "applied" if applied else "stale")] += 1


@router.event("user.updated")
async def user_updated(event: UserUpdated, ctx: Context) -> None:
    await _upsert(
        ctx,
        "user.updated",
        "caches.upsert_user",
        event.user_id,
        event.email,
        event.full_name,
        event.phone_number,
        event.updated_at,
    )


@router.event("pet.updated")
async def pet_updated(event: PetUpdated, ctx: Context) -> None:
    await _upsert(
        ctx,
        "pet.updated",
        "caches.upsert_pet",
        event.pet_id,
        event.name,
        event.species,
        event.breed,
        event.owner_id,
        event.updated_at,
    )


@router.event("clinic.updated")
async def clinic_updated(event: ClinicUpdated, ctx: Context) -> None:
    await _upsert(
        ctx,
        "clinic.updated",
        "caches.upsert_clinic",
        event.clinic_id,
        event.name,
        event.address,
        event.phone_number,
        event.timezone,
        event.updated_at,
    )


@router.event("service.updated")
async def service_updated(event: ServiceUpdated, ctx: Context) -> None:
    await _upsert(
        ctx,
        "service.updated",
        "caches.upsert_service",
        event.service_id,
        event.clinic_id,
        event.name,
        event.price,
        event.duration_minutes,
        event.is_available,
        event.updated_at,
        event.min_notice_minutes,
        event.max_advance_days,
        event.cancel_cutoff_hours,
    )
