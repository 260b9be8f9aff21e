"""`booking.subscriptions.*`: platform services subscribe to our events at run time.

Stored in the database, so every replica's relay (which re-reads them every few seconds) and every
restart sees them. Only admins and other services may manage subscriptions.
"""

from __future__ import annotations

import asyncpg

from booking_rpc.auth import is_privileged, require_actor
from booking_rpc.context import Context
from booking_rpc.errors import RpcError
from booking_rpc.models.common import Actor
from booking_rpc.models.subscriptions import (
    SubscriptionCreateRequest,
    SubscriptionDeleted,
    SubscriptionDeleteRequest,
    SubscriptionOut,
    SubscriptionsFindRequest,
    SubscriptionsList,
)
from booking_rpc.router import Router

router = Router()


def _require_platform(actor: Actor | None) -> None:
    if not is_privileged(require_actor(actor)):
        raise RpcError("FORBIDDEN", "Only admins and platform services manage event subscriptions")


def _out(row: asyncpg.Record) -> SubscriptionOut:
    return SubscriptionOut(**dict(row))


@router.message("booking.subscriptions.create")
async def create_subscription(payload: SubscriptionCreateRequest, ctx: Context) -> SubscriptionOut:
    _require_platform(payload.actor)
    async with ctx.transaction() as conn:
        row = await conn.fetchrow(
            ctx.sql["subscriptions.upsert"], payload.name, payload.host, payload.port, payload.patterns, payload.codec
        )
    assert row is not None
    return _out(row)


@router.message("booking.subscriptions.delete")
async def delete_subscription(payload: SubscriptionDeleteRequest, ctx: Context) -> SubscriptionDeleted:
    _require_platform(payload.actor)
    async with ctx.transaction() as conn:
        row = await conn.fetchrow(ctx.sql["subscriptions.delete"], payload.name)
    return SubscriptionDeleted(name=payload.name, deleted=row is not None)


@router.message("booking.subscriptions.find")
async def find_subscriptions(payload: SubscriptionsFindRequest, ctx: Context) -> SubscriptionsList:
    _require_platform(payload.actor)
    async with ctx.connection() as conn:
        rows = await conn.fetch(ctx.sql["subscriptions.find"])
    return SubscriptionsList(items=[_out(r) for r in rows])
