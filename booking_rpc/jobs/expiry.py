"""The reservation expiry sweep: pending holds past their TTL become 'expired' and give their unit back.

Correctness does not depend on this job (a hold on a slot re-checks and releases that slot's expired holds
in its own transaction, and confirm re-checks the TTL); it exists so that every expired hold is announced
with exactly one `reservation.expired` event and capacity shows up free without waiting for a new hold.
Safe with several replicas: holds are claimed with `FOR UPDATE SKIP LOCKED`, and the pending -> expired
change is a compare-and-swap, so a hold is expired (and announced) once, by whoever gets there first.

The one exception: while someone waits for a slot (the waitlist), its lapsed holds keep their units for
the waiters, and this job is what frees them: in the same transaction it offers each freed slot to its
first waiters (waitlist.offer).
"""

from __future__ import annotations

import asyncpg

from booking_rpc.context import Context
from booking_rpc.jobs.offers import offer_freed

DEADLOCK_RETRIES = 3


async def _expire_once(ctx: Context, batch_size: int) -> int:
    # one statement: the holds, their slots' units and their reservation.expired outbox rows together; then,
    # in the same transaction, each freed slot's units go to its waiters first (waitlist.offer). The
    # transaction's commit wakes the relay (Context.after_commit).
    async with ctx.transaction() as conn:
        rows = await conn.fetch(ctx.sql["reservations.expire_batch"], batch_size)
        for slot_id in sorted({r["slot_id"] for r in rows}):
            await offer_freed(conn, ctx, slot_id)
    return len(rows)


async def expire_holds(ctx: Context, *, batch_size: int = 500) -> int:
    """Expire due holds in batches of `batch_size` until none is left; returns how many were expired."""
    total = 0
    attempts = 0
    while True:
        try:
            done = await _expire_once(ctx, batch_size)
        except asyncpg.DeadlockDetectedError:
            # a writer locking several slots in another order; the batch rolled back, take it again
            attempts += 1
            if attempts > DEADLOCK_RETRIES:
                raise
            continue
        total += done
        if done < batch_size:
            return total
