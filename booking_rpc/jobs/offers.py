"""The waitlist offer made when a unit of a slot frees, in the transaction that freed it (the handlers that
free units and the expiry job both call `offer_freed`).

`waitlist.offer` locks the waiters' hold-quota rows SKIP LOCKED: it runs while this transaction holds the
slot's row, and a hold takes its quota rows before the slot's, so waiting there could deadlock. A quota row
is locked by a concurrent offer (another slot freeing for the same waiter) or a hold of that waiter for a
moment only, so when waiters under their quota are still left with a unit free, the offer is tried again a
few times before the unit is left as it is (it then goes to whoever takes it next).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg

from booking_rpc.context import Context

RETRIES = 5
RETRY_PAUSE = 0.02  # seconds: a concurrent offer's or hold's transaction is a few statements long


async def offer_freed(conn: asyncpg.Connection, ctx: Context, slot_id: UUID) -> int:
    """Offer slot `slot_id`'s free units to its first waiters, in the caller's transaction; how many."""
    s = ctx.settings
    limits = s.max_active_holds_per_user, s.max_active_holds_per_pet
    offered = 0
    for attempt in range(RETRIES + 1):
        offered += len(await conn.fetch(ctx.sql["waitlist.offer"], slot_id, s.waitlist_hold_ttl, *limits))
        if attempt == RETRIES or not await conn.fetchval(ctx.sql["waitlist.unserved"], slot_id, *limits):
            return offered
        await asyncio.sleep(RETRY_PAUSE)
    return offered
