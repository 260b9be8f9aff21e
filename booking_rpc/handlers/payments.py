"""The consumed event `payment.status_changed`: the payment service tells us how a payment went.

Matched by `external_reference`. A payment only moves forward: pending (0) → processing (1) → success or
failed (2, final) → refunded (3). An event that would not move it forward — a duplicate, or one that
arrives after a later state (processing after success) — is ignored, so delivery may repeat and reorder.
Reaching a final state emits `payment.processed` and notifies the user.

A success for a booking that is already cancelled never revives the booking: the payment is marked
success, a full refund of the amount is recorded as pending (refund entry + `payment.refund_requested`),
and the user is told the money goes back. The cancel itself refunded nothing because nothing was paid yet.

A requested refund moves by the same events (domain.refunds, forward-only): `refund_status` processing /
completed / failed, or `new_status: refunded` (completed). `refunded_at` is stamped on completion only;
the final state publishes `payment.refund_processed` and writes an audit entry; a completed refund tells
the user. `booking.payments.find` lets staff find their clinic's payments by refund status (failed ones).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import structlog

from booking_rpc.auth import is_privileged, require_actor
from booking_rpc.context import Context
from booking_rpc.domain import refunds
from booking_rpc.errors import RpcError
from booking_rpc.events.outbox import enqueue
from booking_rpc.handlers.effects import append_log, insert_entry, notify, payment_processed
from booking_rpc.models.bookings import PaymentPage, PaymentRecord, PaymentsFindRequest, PaymentStatusChanged
from booking_rpc.models.common import Role, decode_cursor, encode_cursor, from_row
from booking_rpc.models.events import PaymentRefundProcessed, PaymentRefundRequested
from booking_rpc.router import Router

log = structlog.get_logger(__name__)
router = Router()

RANK = {"pending": 0, "processing": 1, "success": 2, "failed": 2, "refunded": 3}
FINAL = frozenset({"success", "failed"})


@router.event("payment.status_changed")
async def on_payment_status_changed(payload: PaymentStatusChanged, ctx: Context) -> None:
    async with ctx.transaction() as conn:
        p = await conn.fetchrow(ctx.sql["payments.lock_by_reference"], payload.external_reference)
        if p is None:
            log.warning("payment.status_changed for an unknown payment", external_reference=payload.external_reference)
            return
        current, new = p["status"], payload.new_status
        refund_to = payload.refund_status or ("completed" if new == "refunded" else None)
        payment_moves = RANK[new] > RANK.get(current, 0)
        refund_moves = refund_to is not None and refunds.refund_moves_forward(p["refund_status"], refund_to)
        if not payment_moves and not refund_moves:
            log.info("payment event ignored (stale or duplicate)", payment_id=str(p["id"]), current=current, new=new)
            return
        if payment_moves:
            await _move_payment(conn, ctx, p, payload)
        if refund_moves:
            assert refund_to is not None
            await _move_refund(conn, ctx, p, refund_to, payload.changed_at)


async def _log(
    conn: asyncpg.Connection,
    ctx: Context,
    p: asyncpg.Record,
    action: str,
    previous: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    status: str | None = None,
    notes: str | None = None,
) -> None:
    """An entry in the log of payment `p`'s booking; the payment service has no actor."""
    await append_log(conn, ctx, p["booking_id"], action, status or p["booking_status"], previous, new, None, notes)


async def _tell(
    conn: asyncpg.Connection, ctx: Context, p: asyncpg.Record, title: str, content: str, meta: dict[str, Any]
) -> None:
    """A payment notification for the user of payment `p`'s booking."""
    await notify(conn, ctx, p["user_id"], p["booking_id"], "payment", title, content, meta)


async def _move_payment(
    conn: asyncpg.Connection, ctx: Context, p: asyncpg.Record, payload: PaymentStatusChanged
) -> None:
    current, new = p["status"], payload.new_status
    row = await conn.fetchrow(ctx.sql["payments.set_status"], p["id"], new, payload.changed_at)
    assert row is not None
    booking_id = p["booking_id"]
    await _log(
        conn,
        ctx,
        p,
        "payment_status_changed",
        {"payment_status": current},
        {"payment_status": new, "external_reference": p["external_reference"]},
    )
    if new not in FINAL:
        return
    await payment_processed(conn, ctx, p, new, row["paid_at"] if new == "success" else row["updated_at"])
    if new == "success" and p["booking_status"] == "cancelled":
        await _refund_after_cancel(conn, ctx, p)
        return
    code = p["reference_code"]
    title, content = (
        ("Payment received", f"We received your payment for booking {code}.")
        if new == "success"
        else ("Payment failed", f"The payment for booking {code} failed.")
    )
    meta = {"booking_id": str(booking_id), "reference_code": code, "payment_status": new}
    await _tell(conn, ctx, p, title, content, meta)


async def _refund_after_cancel(conn: asyncpg.Connection, ctx: Context, p: asyncpg.Record) -> None:
    rec = await conn.fetchrow(ctx.sql["payments.record_refund"], p["id"], p["amount"])
    assert rec is not None
    booking_id = p["booking_id"]
    if p["amount"] > 0:
        await insert_entry(conn, ctx, booking_id, p["clinic_id"], "refund", p["amount"], p["external_reference"])
        requested = from_row(
            PaymentRefundRequested,
            p,
            payment_id=p["id"],
            refund_amount=p["amount"],
            reason="payment succeeded after the booking was cancelled",
            requested_at=rec["updated_at"],
        )
        await enqueue(conn, ctx.sql, booking_id, requested)
    await _log(
        conn,
        ctx,
        p,
        "refund_requested",
        None,
        {"refund_amount": str(p["amount"]), "refund_status": rec["refund_status"]},
        status="cancelled",
        notes="payment succeeded after cancellation; refunded in full",
    )
    await _tell(
        conn,
        ctx,
        p,
        "Refund on its way",
        f"Your payment for the cancelled booking {p['reference_code']} will be refunded in full.",
        {"booking_id": str(booking_id), "refund_amount": str(p["amount"])},
    )


async def _move_refund(
    conn: asyncpg.Connection, ctx: Context, p: asyncpg.Record, target: str, changed_at: dt.datetime | None
) -> None:
    row = await conn.fetchrow(
        ctx.sql["payments.set_refund_status"], p["id"], target, refunds.refund_predecessors(target), changed_at
    )
    assert row is not None  # the payment row is locked and the move was checked forward
    booking_id = p["booking_id"]
    await _log(
        conn,
        ctx,
        p,
        "refund_status_changed",
        {"refund_status": p["refund_status"]},
        {"refund_status": target, "refund_amount": str(row["refund_amount"])},
    )
    if target not in refunds.REFUND_FINAL:
        return
    processed = from_row(
        PaymentRefundProcessed, row, payment_id=row["id"], refund_status=target, processed_at=row["updated_at"]
    )
    await enqueue(conn, ctx.sql, booking_id, processed)
    if target == "completed":
        await _tell(
            conn,
            ctx,
            p,
            "Refund completed",
            f"Your refund of {row['refund_amount']} {row['currency']} for booking {p['reference_code']} is done.",
            {"booking_id": str(booking_id), "refund_amount": str(row["refund_amount"]), "refund_status": target},
        )


@router.message("booking.payments.find")
async def find_payments(payload: PaymentsFindRequest, ctx: Context) -> PaymentPage:
    """Payments with their bookings by refund/payment status, newest change first (staff: their clinic's)."""
    actor = require_actor(payload.actor)
    clinic_id = payload.clinic_id
    if not is_privileged(actor):
        if actor.role != Role.CLINIC_STAFF or actor.clinic_id is None:
            raise RpcError("FORBIDDEN", "Only clinic staff or an admin may list payments")
        if clinic_id is not None and clinic_id != actor.clinic_id:
            raise RpcError("FORBIDDEN", "Clinic staff may list only their clinic's payments")
        clinic_id = actor.clinic_id
    after_at: dt.datetime | None = None
    after_id: uuid.UUID | None = None
    if payload.cursor is not None:
        after_at, after_id = decode_cursor(payload.cursor, dt.datetime.fromisoformat, uuid.UUID)
    async with ctx.connection() as conn:
        rows = await conn.fetch(
            ctx.sql["payments.find"],
            clinic_id,
            payload.refund_status,
            payload.status,
            after_at,
            after_id,
            payload.limit + 1,
        )
    items = [PaymentRecord.model_validate(dict(r)) for r in rows[: payload.limit]]
    next_cursor = None
    if len(rows) > payload.limit:
        last = rows[payload.limit - 1]
        next_cursor = encode_cursor([last["updated_at"].isoformat(), str(last["id"])])
    return PaymentPage(items=items, next_cursor=next_cursor)
