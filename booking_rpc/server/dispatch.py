"""Starting a handler's coroutine for a transport: in a Task, or eagerly (TCP and NATS share this).

An eager route's coroutine runs at once, from the transport's read callback, up to its first real
suspension: a handler that does no I/O (ping, echo) answers there with no Task at all; one that waits
continues in a Task (`_resume`). Only routes registered eager=True run so: outside a Task,
asyncio.timeout() cannot be used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Drive a coroutine that was started outside a Task, as a Task would (Python 3.11 has no eager tasks).

    The coroutine yielded a future it waits on: wait for it here, then resume the coroutine, which reads
    the future's result or exception itself. Cancellation is thrown into the coroutine.
    """
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # what Task.__step does with a yielded future before waiting on it
                yielded._asyncio_future_blocking = False
                await yielded
        except asyncio.CancelledError as cancelled:
            try:
                yielded = coro.throw(cancelled)
            except StopIteration:
                return
            continue
        except BaseException:
            pass
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def start_call(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], eager: bool
) -> asyncio.Task[None] | None:
    """The Task that runs `coro`, or None when it ran eagerly to its end already."""
    if not eager:
        return loop.create_task(coro)
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_resume(coro, yielded))
