"""`booking.reservation.create` / `.cancel`: the hold engine.

A hold is one statement, `reservations.hold`, so one transaction and one round trip: it gives back the
slot's holds past their TTL (so capacity never drifts while the expiry job is late), takes one unit of
capacity with a single conditional UPDATE (it waits only on that slot's row and can never push
`booked_count` past `capacity`), inserts the reservation and writes `reservation.expired` /
`reservation.created` to the outbox. When it takes nothing, one diagnostic read says why.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from uuid import UUID

import asyncpg
import orjson

from booking_rpc.auth import is_privileged, require_actor, require_self
from booking_rpc.context import Context
from booking_rpc.db.pool import record_uuid_text
from booking_rpc.domain.availability import REASON_MESSAGES, unavailable_reason
from booking_rpc.errors import RpcError, not_found
from booking_rpc.events.outbox import enqueue
from booking_rpc.jobs.offers import offer_freed
from booking_rpc.models.common import from_row, row_json
from booking_rpc.models.events import ReservationCancelled
from booking_rpc.models.reservations import (
    ReservationCancelRequest,
    ReservationCreateRequest,
    ReservationOut,
)
from booking_rpc.router import Router

router = Router()

IDEMPOTENCY_CONSTRAINT = "uq_reservations_user_idempotency"
ONE_HOLD_CONSTRAINT = "uq_reservations_pending_user_slot"


def new_lock_id() -> str:
    """An unguessable hold token (192 bits): secrets.token_urlsafe(24), without its three calls around
    os.urandom."""
    return base64.urlsafe_b64encode(os.urandom(24)).decode()


def fingerprint(payload: ReservationCreateRequest) -> str | None:
    """What makes two creates "the same request" for idempotency (the user is part of the key); None without
    an idempotency key, since only a replay by key compares it."""
    if payload.idempotency_key is None:
        return None
    text = f"v1|{payload.pet_id}|{payload.service_id}|{payload.slot_id}"
    return hashlib.sha256(text.encode()).hexdigest()


def reservation_out(row: asyncpg.Record) -> orjson.Fragment:
    """A ReservationOut's JSON from a reservations row (its request_fingerprint left out): pydantic's
    validation and serialiser of the model cost a create about as much as the rest of its Python."""
    return row_json(ReservationOut, row, record_uuid_text)


def _replay(row: asyncpg.Record, fp: str | None) -> orjson.Fragment:
    if row["request_fingerprint"] != fp:
        raise RpcError(
            "IDEMPOTENCY_CONFLICT",
            "This idempotency key was already used for a different reservation request",
            {"reservation_id": str(row["id"])},
        )
    return reservation_out(row)


async def _refuse(conn: asyncpg.Connection, ctx: Context, payload: ReservationCreateRequest) -> RpcError:
    """The hold took nothing: the caller's hold quota, else the slot (read right after it)."""
    limits = ctx.settings.max_active_holds_per_user, ctx.settings.max_active_holds_per_pet
    quota = await conn.fetchrow(ctx.sql["reservations.hold_quota"], payload.user_id, payload.pet_id, *limits)
    if quota is not None and (quota["user_at_limit"] or quota["pet_at_limit"]):
        who = "You have" if quota["user_at_limit"] else "This pet has"
        return RpcError(
            "TOO_MANY_HOLDS",
            f"{who} as many pending holds as allowed: confirm or cancel one first",
            {"max_per_user": limits[0], "max_per_pet": limits[1], "limit": "user" if quota["user_at_limit"] else "pet"},
        )
    return await hold_refusal(conn, ctx, payload.slot_id, payload.service_id, payload.user_id)


async def hold_refusal(
    conn: asyncpg.Connection, ctx: Context, slot_id: UUID, service_id: UUID, user_id: UUID | None
) -> RpcError:
    """A take of a unit (a hold, a reschedule's) got nothing from the slot: the error that says precisely
    why (read right after it)."""
    row = await conn.fetchrow(ctx.sql["slots.diagnose"], slot_id, user_id)
    details = {"slot_id": str(slot_id)}
    if row is None or row["service_id"] != service_id:
        return not_found("Slot", details)
    reason = unavailable_reason(row)
    if reason is not None and reason != "SLOT_FULL":
        if reason == "AVAILABILITY_EXCEPTION" and row["exception_reason"]:
            details["exception_reason"] = row["exception_reason"]
        return RpcError(reason, REASON_MESSAGES[reason], details)
    if row["held_by_user"]:
        return RpcError("ALREADY_HELD", "You already hold this slot", details)
    return RpcError("SLOT_FULL", REASON_MESSAGES["SLOT_FULL"], details)


@router.message("booking.reservation.create", reply=ReservationOut)
async def create_reservation(payload: ReservationCreateRequest, ctx: Context) -> orjson.Fragment:
    require_self(payload.actor, payload.user_id)
    fp = fingerprint(payload)
    key = payload.idempotency_key
    try:
        async with ctx.connection() as conn:
            if key is not None:
                first = await conn.fetchrow(ctx.sql["reservations.get_by_idempotency"], payload.user_id, key)
                if first is not None:
                    return _replay(first, fp)
            row = await conn.fetchrow(
                ctx.sql["reservations.hold"],
                payload.user_id,
                payload.pet_id,
                payload.service_id,
                payload.slot_id,
                new_lock_id(),
                ctx.settings.hold_ttl_seconds,
                key,
                fp,
                ctx.settings.max_active_holds_per_user,
                ctx.settings.max_active_holds_per_pet,
                None,  # the events' trace context: the traced connection's, when tracing is on
            )
            if row is not None:
                return orjson.Fragment(row["reservation"])  # the reply as the statement wrote it
            if key is not None:  # a racing twin with this key may have taken the last unit
                first = await conn.fetchrow(ctx.sql["reservations.get_by_idempotency"], payload.user_id, key)
                if first is not None:
                    return _replay(first, fp)
            raise await _refuse(conn, ctx, payload)
    except asyncpg.UniqueViolationError as exc:
        # The statement rolled back, so the unit it took is back: nothing changed.
        if exc.constraint_name == IDEMPOTENCY_CONSTRAINT and key is not None:
            async with ctx.connection() as conn:
                first = await conn.fetchrow(ctx.sql["reservations.get_by_idempotency"], payload.user_id, key)
            if first is not None:
                return _replay(first, fp)
            raise RpcError("CONFLICT", "A concurrent request with this idempotency key failed; retry") from exc
        if exc.constraint_name == ONE_HOLD_CONSTRAINT:
            raise RpcError("ALREADY_HELD", "You already hold this slot", {"slot_id": str(payload.slot_id)}) from exc
        raise RpcError("CONFLICT", "The reservation conflicts with another one") from exc
    except asyncpg.CheckViolationError as exc:  # the capacity CHECKs: cannot happen after the guarded take
        raise RpcError("SLOT_FULL", REASON_MESSAGES["SLOT_FULL"], {"slot_id": str(payload.slot_id)}) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise not_found("Slot", {"slot_id": str(payload.slot_id)}) from exc


@router.message("booking.reservation.cancel", reply=ReservationOut)
async def cancel_reservation(payload: ReservationCancelRequest, ctx: Context) -> orjson.Fragment:
    actor = require_actor(payload.actor)
    details = {"reservation_id": str(payload.reservation_id)}
    async with ctx.transaction() as conn:
        current = await conn.fetchrow(ctx.sql["reservations.get"], payload.reservation_id)
        if current is None:
            raise not_found("Reservation", details)
        if not is_privileged(actor):
            require_self(actor, current["user_id"])
        if not secrets.compare_digest(current["lock_id"], payload.lock_id):
            raise RpcError("LOCK_MISMATCH", "The lock_id does not match this reservation", details)
        row = await conn.fetchrow(ctx.sql["reservations.cancel"], payload.reservation_id, payload.lock_id)
        if row is None:
            # re-read: the state may have moved since the first read (confirm, expiry, another cancel)
            now = await conn.fetchrow(ctx.sql["reservations.get"], payload.reservation_id)
            assert now is not None
            if now["status"] == "cancelled":
                return reservation_out(now)  # a double cancel is idempotent
            if now["status"] == "confirmed":
                raise RpcError(
                    "ILLEGAL_TRANSITION", "The reservation is confirmed; cancel the booking instead", details
                )
            raise RpcError("RESERVATION_EXPIRED", "The reservation has expired", details)
        await conn.execute(ctx.sql["slots.release_unit"], row["slot_id"], 1)
        await offer_freed(conn, ctx, row["slot_id"])
        cancelled = from_row(ReservationCancelled, row, reservation_id=row["id"], cancelled_at=row["updated_at"])
        await enqueue(conn, ctx.sql, row["id"], cancelled)
        return reservation_out(row)
