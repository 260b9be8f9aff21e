"""`booking.slots.*` and `booking.availability.check`: generation, block/unblock, search, availability."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import orjson

from booking_rpc.auth import require_clinic_staff
from booking_rpc.context import Context
from booking_rpc.domain.availability import REASON_MESSAGES, remaining_of, unavailable_reason
from booking_rpc.domain.schedule import DailyWindow, generate_slots
from booking_rpc.errors import RpcError, not_found
from booking_rpc.jobs.offers import offer_freed
from booking_rpc.models.catalog import (
    AvailabilityCheckRequest,
    AvailabilityReply,
    SlotAvailability,
    SlotBlockRequest,
    SlotOut,
    SlotsFindRequest,
    SlotsGenerateReply,
    SlotsGenerateRequest,
    SlotsPage,
    UnavailableReason,
)
from booking_rpc.models.common import MIDNIGHT, NIL_UUID, decode_cursor, encode_cursor, from_row
from booking_rpc.router import Router

router = Router()


def slot_out(row: asyncpg.Record) -> SlotOut:
    return from_row(
        SlotOut, row, remaining=row["remaining"] if "remaining" in row else row["capacity"] - row["booked_count"]
    )


# --- search


@router.message("booking.slots.find", reply=SlotsPage)
async def find_slots(payload: SlotsFindRequest, ctx: Context) -> dict[str, Any]:
    """A page of slots: a `SlotsPage` (items: list[SlotOut], next_cursor), published as such.

    PostgreSQL renders the page's items as JSON text and its bytes are embedded as they came (the pool reads
    the page as bytes: db/pool.py RAW_TEXT_TYPE; `orjson.Fragment`): no per-row Python objects, no str
    decoded and encoded again, so a 500-row page costs the service about what a 1-row page does. The tests
    validate real replies against the published SlotsPage schema.
    """
    after: tuple[dt.date, dt.time, uuid.UUID] = (payload.date_from, MIDNIGHT, NIL_UUID)
    if payload.cursor is not None:
        day, time, slot_id = decode_cursor(payload.cursor, dt.date.fromisoformat, dt.time.fromisoformat, uuid.UUID)
        after = (day, time, slot_id)
    async with ctx.read_connection() as conn:
        row = await conn.fetchrow(
            ctx.sql["slots.find"],
            payload.service_id,
            payload.date_from,
            payload.date_to,
            payload.staff_id,
            payload.only_available,
            after[0],
            after[1],
            after[2],
            payload.limit,
        )
    assert row is not None
    next_cursor = None
    if row["has_more"]:
        next_cursor = encode_cursor([row["last_date"], row["last_time"], str(row["last_id"])])
    return {"items": orjson.Fragment(row["items"]), "next_cursor": next_cursor}


# --- availability


def _slot_availability(row: asyncpg.Record) -> SlotAvailability:
    reason = unavailable_reason(row)
    remaining = 0 if reason is not None else remaining_of(row)
    return from_row(
        SlotAvailability, row, slot_id=row["id"], available=reason is None, reason=reason, remaining=remaining
    )


@router.message("booking.availability.check")
async def check_availability(payload: AvailabilityCheckRequest, ctx: Context) -> AvailabilityReply:
    async with ctx.read_connection() as conn:
        if payload.slot_id is not None:
            row = await conn.fetchrow(ctx.sql["slots.diagnose"], payload.slot_id, None)
            if row is None or row["service_id"] != payload.service_id:
                raise not_found("Slot", {"slot_id": str(payload.slot_id)})
            one = _slot_availability(row)
            return AvailabilityReply(
                service_id=payload.service_id,
                slot_id=payload.slot_id,
                date=row["slot_date"],
                available=one.available,
                reason=one.reason,
                message=REASON_MESSAGES.get(one.reason) if one.reason else None,
                remaining=one.remaining,
            )
        assert payload.date is not None
        service = await conn.fetchrow(ctx.sql["services.get"], payload.service_id)
        if service is None:
            raise not_found("Service", {"service_id": str(payload.service_id)})
        rows = await conn.fetch(ctx.sql["slots.diagnose_date"], payload.service_id, payload.date)
    slots = [_slot_availability(r) for r in rows]
    reason: UnavailableReason | None = None
    if not service["is_available"]:
        reason = "SERVICE_NOT_BOOKABLE"
    elif rows and rows[0]["on_exception"]:
        reason = "AVAILABILITY_EXCEPTION"
    elif not any(s.available for s in slots):
        reasons = {s.reason for s in slots}
        if not slots or "SLOT_FULL" in reasons:
            reason = "SLOT_FULL"
        else:
            # the most actionable one: blocked, then the booking window, else all are in the past
            reason = next((r for r in ("SLOT_BLOCKED", "TOO_FAR_AHEAD", "TOO_SOON") if r in reasons), "SLOT_IN_PAST")
    return AvailabilityReply(
        service_id=payload.service_id,
        date=payload.date,
        available=reason is None,
        reason=reason,
        message=REASON_MESSAGES.get(reason) if reason else None,
        remaining=sum(s.remaining for s in slots),
        slots=slots,
    )


# --- generation


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RpcError("BAD_REQUEST", f"The clinic's time zone {name!r} is unknown") from exc


@router.message("booking.slots.generate")
async def generate(payload: SlotsGenerateRequest, ctx: Context) -> SlotsGenerateReply:
    async with ctx.connection() as conn:
        service = await conn.fetchrow(ctx.sql["services.get"], payload.service_id)
    if service is None:
        raise not_found("Service", {"service_id": str(payload.service_id)})
    require_clinic_staff(payload.actor, service["clinic_id"])
    tz = _zone(service["timezone"])
    slots = generate_slots(
        timezone=tz,
        date_from=payload.date_from,
        date_to=payload.date_to,
        windows=[DailyWindow(w.start, w.end) for w in payload.windows],
        slot_minutes=payload.slot_minutes or service["duration_minutes"],
        weekdays=payload.weekdays,
        step_minutes=payload.step_minutes,
    )
    created = 0
    if slots:
        async with ctx.transaction() as conn:
            rows = await conn.fetch(
                ctx.sql["slots.insert_many"],
                payload.service_id,
                payload.staff_id,
                payload.capacity,
                [s.slot_date for s in slots],
                [s.start for s in slots],
                [s.end for s in slots],
                [s.starts_at for s in slots],
                [s.ends_at for s in slots],
            )
            created = len(rows)
    return SlotsGenerateReply(service_id=payload.service_id, timezone=tz.key, generated=len(slots), created=created)


# --- block / unblock


async def _set_blocked(payload: SlotBlockRequest, ctx: Context, statement: str) -> SlotOut:
    async with ctx.transaction() as conn:
        current = await conn.fetchrow(ctx.sql["slots.get"], payload.slot_id)
        if current is None:
            raise not_found("Slot", {"slot_id": str(payload.slot_id)})
        require_clinic_staff(payload.actor, current["clinic_id"])
        row = await conn.fetchrow(ctx.sql[statement], payload.slot_id)
        unblocked = row is not None and statement == "slots.unblock" and current["status"] == "blocked"
        if unblocked and await offer_freed(conn, ctx, payload.slot_id):  # units free again: the waiters first
            row = await conn.fetchrow(ctx.sql["slots.get"], payload.slot_id)
    if row is None:  # deleted between the two statements
        raise not_found("Slot", {"slot_id": str(payload.slot_id)})
    return slot_out(row)


@router.message("booking.slots.block")
async def block(payload: SlotBlockRequest, ctx: Context) -> SlotOut:
    return await _set_blocked(payload, ctx, "slots.block")


@router.message("booking.slots.unblock")
async def unblock(payload: SlotBlockRequest, ctx: Context) -> SlotOut:
    return await _set_blocked(payload, ctx, "slots.unblock")
