"""Request deadlines: every routed message is answered within BOOKING_RPC_REQUEST_TIMEOUT, or sooner when
the caller asks.

A caller asks for less with the NestJS 12 packet metadata key `timeout`: its remaining budget in
milliseconds (a numeric string, as `setOnDispatchHook` writes `Record<string, string>`, or a number). It is
relative, not an instant, so the caller's and the service's clocks need not agree (gRPC's `grpc-timeout`
does the same). A value that is not a positive number, or is above the service's own limit, is ignored.

The deadline middleware sets `call.deadline` and runs the route under a timer that cancels it at that
time (what `asyncio.timeout_at` does, without its context manager's cost per request): out of time,
the handler is cancelled (asyncpg stops its query; the pool terminates that connection, and PostgreSQL's
`client_connection_check_interval` ends the backend's work) and the caller gets `TIMEOUT` (504). The pool
reads the same deadline (`remaining`) so that waiting for a connection, or opening one, never outlives
it: that wait gives up a moment earlier, as `SERVICE_UNAVAILABLE` (503).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
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


class _Expiry:
    """The deadline of one request: when it is due, and the callback that cancels the request's task then
    (and remembers it did). `task` is None once the request is over."""

    __slots__ = ("fired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.when = when
        self.fired = False

    def __call__(self) -> None:
        if self.task is not None:
            self.fired = True
            self.task.cancel()


class _DefaultDeadlines:
    """The deadlines of the requests under the default timeout, watched by one timer.

    Each is the loop time at its start plus the same timeout, so they come in the order they fall due: a
    queue whose head is the next one, and one timer at the head's deadline instead of a timer set and
    cancelled around every request (a loop.call_at is a handle and a libuv timer, and its cancel a close).
    A finished request's entry leaves once it reaches the head, so the queue holds the requests in flight
    and those that finished after one still running.
    """

    __slots__ = ("loop", "queue", "timer")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: deque[_Expiry] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, expiry: _Expiry) -> None:
        if loop is not self.loop:  # a router served by another loop than before (tests run a loop each)
            self.loop, self.queue, self.timer = loop, deque(), None
        self.queue.append(expiry)
        if self.timer is None:
            self.timer = loop.call_at(expiry.when, self._due, loop)

    def finished(self, expiry: _Expiry) -> None:
        expiry.task = None
        queue = self.queue
        while queue and queue[0].task is None:
            queue.popleft()

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:
            return
        queue = self.queue
        now = loop.time()
        # never before its deadline: a timer may fire a little early (uvloop rounds to milliseconds)
        while queue and (queue[0].task is None or queue[0].when <= now):
            queue.popleft()()
        self.timer = loop.call_at(queue[0].when, self._due, loop) if queue else None


def deadline_middleware(default_timeout: float) -> Middleware:
    """Bound every non-eager route by `default_timeout` seconds, or the caller's shorter `timeout`.

    What `asyncio.timeout_at` does (a timer that cancels the task; its own cancel turned into the timeout,
    another's left alone), without its context manager's object and two coroutines per request: this runs
    around every request. The requests under `default_timeout` share one timer (_DefaultDeadlines); a
    caller's shorter timeout gets a timer of its own.
    """
    defaults = _DefaultDeadlines()

    async def deadline(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        if route.eager:
            # eager routes (ping, echo) do no I/O and run outside a Task, where a deadline cannot cancel them
            return await call_next(data)
        timeout = default_timeout
        asked = requested_timeout(call)
        if asked is not None and asked < timeout:
            timeout = asked
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        shared = timeout == default_timeout
        if call.deadline is not None and call.deadline < when:
            when = call.deadline
            shared = False
        call.deadline = when
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("the deadline middleware runs inside a task")
        cancelling = task.cancelling()
        expiry = _Expiry(task, when)
        timer = None
        if shared:
            defaults.add(loop, expiry)
        else:
            timer = loop.call_at(when, expiry)
        token = current_deadline.set(when)
        try:
            return await call_next(data)
        except (asyncio.CancelledError, TimeoutError) as exc:
            if expiry.fired:
                expiry.fired = False
                # ours unless someone else cancelled the task meanwhile (shutdown): then theirs goes on
                if task.uncancel() <= cancelling or not isinstance(exc, asyncio.CancelledError):
                    raise RpcError(
                        "TIMEOUT", "The request ran out of time", {"timeout_ms": round(timeout * 1000)}
                    ) from None
            raise
        finally:
            if timer is None:
                defaults.finished(expiry)
            else:
                timer.cancel()
            if expiry.fired:  # fired, but the handler swallowed the cancel: take it back, as asyncio does
                task.uncancel()
            current_deadline.reset(token)

    return deadline


__all__ = ["TIMEOUT_KEY", "current_deadline", "deadline_middleware", "remaining", "requested_timeout"]
