"""Announcing expired holds: one `reservation.expired` per hold, whoever expires it (a new hold on the
slot, or the expiry job)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from booking_rpc.db.queries import Queries
from booking_rpc.events.outbox import enqueue
from booking_rpc.models.events import ReservationExpired


async def announce_expired(conn: asyncpg.Connection, sql: Queries, rows: Sequence[asyncpg.Record]) -> None:
    """Rows of reservations just marked expired (id, user_id, pet_id, service_id, slot_id, expires_at)."""
    for r in rows:
        await enqueue(
            conn,
            sql,
            r["id"],
            ReservationExpired(
                reservation_id=r["id"],
                user_id=r["user_id"],
                pet_id=r["pet_id"],
                service_id=r["service_id"],
                slot_id=r["slot_id"],
                expired_at=r["expires_at"],
            ),
        )
