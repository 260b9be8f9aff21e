"""`booking.services.*`: the clinics' service catalogue."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from booking_rpc.auth import require_clinic_staff
from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.models.catalog import (
    AvailabilityException,
    ServiceOut,
    ServicesFindRequest,
    ServicesPage,
    ServiceUpsertRequest,
)
from booking_rpc.models.common import NIL_UUID, decode_cursor, encode_cursor, from_row
from booking_rpc.router import Router

router = Router()


def service_out(row: asyncpg.Record) -> ServiceOut:
    raw = row["availability_exceptions"]
    exceptions = (
        [AvailabilityException.model_validate(e) for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    )
    return from_row(ServiceOut, row, availability_exceptions=exceptions)


@router.message("booking.services.find")
async def find_services(payload: ServicesFindRequest, ctx: Context) -> ServicesPage:
    after_name, after_id = "", NIL_UUID
    if payload.cursor is not None:
        after_name, after_id = decode_cursor(payload.cursor, str, uuid.UUID)
    async with ctx.read_connection() as conn:
        rows = await conn.fetch(
            ctx.sql["services.find"],
            payload.clinic_id,
            payload.available_only,
            after_name,
            after_id,
            payload.limit + 1,
        )
    items = [service_out(r) for r in rows[: payload.limit]]
    next_cursor = None
    if len(rows) > payload.limit:
        last = items[-1]
        next_cursor = encode_cursor([last.name, str(last.id)])
    return ServicesPage(items=items, next_cursor=next_cursor)


@router.message("booking.services.upsert")
async def upsert_service(payload: ServiceUpsertRequest, ctx: Context) -> ServiceOut:
    require_clinic_staff(payload.actor, payload.clinic_id)
    service_id = payload.id or uuid.uuid4()
    exceptions: list[dict[str, Any]] = [
        e.model_dump(mode="json", exclude_none=True) for e in payload.availability_exceptions
    ]
    async with ctx.transaction() as conn:
        row = await conn.fetchrow(
            ctx.sql["services.upsert"],
            service_id,
            payload.clinic_id,
            payload.name,
            payload.description,
            payload.price,
            payload.duration_minutes,
            payload.requires_approval,
            payload.is_available,
            exceptions,
            payload.min_notice_minutes,
            payload.max_advance_days,
            payload.cancel_cutoff_hours,
        )
    if row is None:
        raise RpcError("CONFLICT", "This service belongs to another clinic", {"service_id": str(service_id)})
    return service_out(row)
