"""Request deadlines: every routed message is answered within BOOKING_RPC_REQUEST_TIMEOUT, or sooner when
the caller asks.

A caller asks for less with the NestJS 12 packet metadata key `timeout`: its remaining budget in
milliseconds (a numeric string, as `setOnDispatchHook` writes `Record<string, string>`, or a number). It is
relative, not an instant, so the caller's and the service's clocks need not agree (gRPC's `grpc-timeout`
does the same). A value that is not a positive number, or is above the service's own limit, is ignored.

The deadline middleware sets `call.deadline` and runs the route under `asyncio.timeout_at`: out of time,
the handler is cancelled (asyncpg stops its query; the pool terminates that connection, and PostgreSQL's
`client_connection_check_interval` ends the backend's work) and the caller gets `TIMEOUT` (504). The pool
reads the same deadline (`remaining`) so that waiting for a connection, or opening one, never outlives
it: that wait gives up a moment earlier, as `SERVICE_UNAVAILABLE` (503).
"""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from booking_rpc.errors import RpcError

if TYPE_CHECKING:  # at run time this module needs only errors: db/pool.py reads `remaining` from here
    from booking_rpc.router import Call, Middleware, Next, Route

# The loop time by which the current request must be answered (None outside a request). Set by the
# middleware inside the request's own Task, so it is that request's alone.
current_deadline: ContextVar[float | None] = ContextVar("booking_rpc_deadline", default=None)

TIMEOUT_KEY = "timeout"


def remaining() -> float | None:
    """Seconds left before the current request's deadline (may be <= 0), or None outside a request."""
    deadline = current_deadline.get()
    if deadline is None:
        return None
    return deadline - asyncio.get_running_loop().time()


def requested_timeout(call: Call) -> float | None:
    """The caller's own budget in seconds (metadata `timeout`, in ms), or None when absent or unusable."""
    raw = call.header(TIMEOUT_KEY)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        millis = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(millis) or millis <= 0:
        return None
    return millis / 1000.0


def deadline_middleware(default_timeout: float) -> Middleware:
    """Bound every non-eager route by `default_timeout` seconds, or the caller's shorter `timeout`."""

    async def deadline(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        if route.eager:
            # eager routes (ping, echo) do no I/O and run outside a Task, where asyncio.timeout cannot
            return await call_next(data)
        timeout = default_timeout
        asked = requested_timeout(call)
        if asked is not None and asked < timeout:
            timeout = asked
        when = asyncio.get_running_loop().time() + timeout
        if call.deadline is not None and call.deadline < when:
            when = call.deadline
        call.deadline = when
        token = current_deadline.set(when)
        try:
            async with asyncio.timeout_at(when) as scope:
                return await call_next(data)
        except TimeoutError:
            if scope.expired():
                raise RpcError(
                    "TIMEOUT", "The request ran out of time", {"timeout_ms": round(timeout * 1000)}
                ) from None
            raise
        finally:
            current_deadline.reset(token)

    return deadline


__all__ = ["TIMEOUT_KEY", "current_deadline", "deadline_middleware", "remaining", "requested_timeout"]
