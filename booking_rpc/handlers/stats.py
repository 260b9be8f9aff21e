"""`booking.stats.completion_rates`: platform reporting, for admins and services."""

from __future__ import annotations

from booking_rpc.auth import is_privileged, require_actor
from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.models.stats import CompletionRate, CompletionRates, CompletionRatesRequest
from booking_rpc.router import Router

router = Router()


@router.message("booking.stats.completion_rates")
async def completion_rates(payload: CompletionRatesRequest, ctx: Context) -> CompletionRates:
    if not is_privileged(require_actor(payload.actor)):
        raise RpcError("FORBIDDEN", "Only admins and platform services read platform statistics")
    async with ctx.read_connection() as conn:
        rows = await conn.fetch(ctx.sql["stats.completion_rates"], max(1, min(payload.months, 120)))
    return CompletionRates(items=[CompletionRate(**dict(r)) for r in rows])
