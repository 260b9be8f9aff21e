"""Diagnostics: `ping` and `echo`, also the transport bench's target."""

from __future__ import annotations

from typing import Any

from booking_rpc.router import Router

router = Router()


@router.message("ping", eager=True)
async def ping(payload: Any, ctx: Any) -> str:
    return "pong"


@router.message("echo", eager=True)
async def echo(payload: Any, ctx: Any) -> Any:
    return payload
