"""`booking.waitlist.join` / `.leave` / `.find`, and the offer made when a unit frees.

Every path that frees a unit of a slot (cancelling a hold or a booking, rescheduling away, unblocking;
the expiry job too) calls `offer_freed` (jobs/offers.py) in its own transaction, right after the release: the first waiters get real holds (`waitlist.offer`, one statement) before the transaction
commits, so the unit is never free for someone who did not wait. While anyone waits for a slot, its holds
past their TTL keep their units for the waiters (booking_free_stale, migration 0041) until the expiry job
expires them and offers them on. An offer not confirmed in time expires like any hold, and the next
waiter is offered.

An offer is a pending hold, so it counts toward the user's and the pet's hold quotas
(BOOKING_RPC_MAX_ACTIVE_HOLDS_PER_USER / _PER_PET) and respects them: a waiter already at the quota is passed
over for this unit and keeps their place for the next. Otherwise the waitlist would be a way around the
quota (wait for ten slots, be offered ten holds at once).
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from booking_rpc.auth import is_privileged, is_staff_of, require_actor, require_self
from booking_rpc.context import Context
from booking_rpc.errors import RpcError, not_found
from booking_rpc.jobs.offers import offer_freed
from booking_rpc.models.common import Actor, Role, from_row
from booking_rpc.models.waitlist import (
    WaitlistEntryOut,
    WaitlistFindRequest,
    WaitlistJoinRequest,
    WaitlistLeaveRequest,
    WaitlistPage,
)
from booking_rpc.router import Router

router = Router()


def entry_out(row: asyncpg.Record, actor: Actor) -> WaitlistEntryOut:
    own = actor.id == row["user_id"] or is_privileged(actor)
    return from_row(WaitlistEntryOut, row, date=row["slot_date"], lock_id=row["lock_id"] if own else None)


async def _entry(conn: asyncpg.Connection, ctx: Context, entry_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(ctx.sql["waitlist.find"], None, None, None, None, entry_id, False, 1)


@router.message("booking.waitlist.join")
async def join(payload: WaitlistJoinRequest, ctx: Context) -> WaitlistEntryOut:
    """Wait for a slot, or for any slot of a service on a date; offered at once when a unit is free."""
    actor = require_self(payload.actor, payload.user_id)
    async with ctx.transaction() as conn:
        if payload.slot_id is not None:
            slot = await conn.fetchrow(ctx.sql["slots.diagnose"], payload.slot_id, payload.user_id)
            details = {"slot_id": str(payload.slot_id)}
            if slot is None or slot["service_id"] != payload.service_id:
                raise not_found("Slot", details)
            if slot["in_past"]:
                raise RpcError("SLOT_IN_PAST", "The slot has already started", details)
            if slot["held_by_user"]:
                raise RpcError("ALREADY_HELD", "You already hold this slot", details)
        elif await conn.fetchrow(ctx.sql["services.get"], payload.service_id) is None:
            raise not_found("Service", {"service_id": str(payload.service_id)})
        target = (payload.user_id, payload.slot_id, payload.service_id, payload.date)
        entry_id = await conn.fetchval(
            ctx.sql["waitlist.join"], payload.user_id, payload.pet_id, payload.slot_id, payload.service_id, payload.date
        )
        if entry_id is None:  # already waiting for this target: the same entry
            entry_id = await conn.fetchval(ctx.sql["waitlist.waiting_entry"], *target)
        else:
            # a unit may be free right now (nobody was waiting when it freed): the queue starts at once
            if payload.slot_id is not None:
                slots = [payload.slot_id]
            else:
                slots = [
                    r["id"]
                    for r in await conn.fetch(ctx.sql["waitlist.free_slots_on"], payload.service_id, payload.date)
                ]
            for slot_id in slots:
                await offer_freed(conn, ctx, slot_id)
        row = await _entry(conn, ctx, entry_id)
    assert row is not None
    return entry_out(row, actor)


@router.message("booking.waitlist.leave")
async def leave(payload: WaitlistLeaveRequest, ctx: Context) -> WaitlistEntryOut:
    """Stop waiting; idempotent. An entry already offered keeps its hold (cancel the reservation)."""
    actor = require_actor(payload.actor)
    async with ctx.transaction() as conn:
        row = await _entry(conn, ctx, payload.entry_id)
        if row is None or not (
            is_privileged(actor) or actor.id == row["user_id"] or is_staff_of(actor, row["clinic_id"])
        ):
            raise not_found("Waitlist entry", {"entry_id": str(payload.entry_id)})
        if await conn.fetchval(ctx.sql["waitlist.leave"], payload.entry_id) is not None:
            row = await _entry(conn, ctx, payload.entry_id)
    assert row is not None
    return entry_out(row, actor)


@router.message("booking.waitlist.find")
async def find(payload: WaitlistFindRequest, ctx: Context) -> WaitlistPage:
    """Waitlist entries in queue order: a user's own, or a slot's / a service's for its clinic's staff."""
    actor = require_actor(payload.actor)
    user_id = payload.user_id
    if actor.role == Role.USER:
        if user_id is not None and user_id != actor.id:
            raise RpcError("FORBIDDEN", "A user may list only their own waitlist entries")
        user_id = actor.id
    elif not is_privileged(actor) and payload.slot_id is None and payload.service_id is None:
        raise RpcError("BAD_REQUEST", "Clinic staff list a slot's or a service's waitlist: give slot_id or service_id")
    async with ctx.connection() as conn:
        rows = await conn.fetch(
            ctx.sql["waitlist.find"],
            user_id,
            payload.slot_id,
            payload.service_id,
            payload.date,
            None,
            payload.active_only,
            payload.limit,
        )
    if actor.role == Role.CLINIC_STAFF and any(r["clinic_id"] != actor.clinic_id for r in rows):
        raise RpcError("FORBIDDEN", "Clinic staff may list only their clinic's waitlists")
    return WaitlistPage(items=[entry_out(r, actor) for r in rows])
