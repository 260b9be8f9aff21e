"""Runs the periodic jobs of this process: hold expiry, due reminders, view refresh.

Each job is safe with several replicas on its own (SKIP LOCKED or an advisory lock), so every replica
simply runs all of them. A failing run is logged and counted; the next interval tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from opentelemetry.trace import SpanKind

from booking_rpc.context import Context
from booking_rpc.jobs.expiry import expire_holds
from booking_rpc.jobs.reminders import send_due_reminders
from booking_rpc.jobs.views import refresh_views
from booking_rpc.tracing import Tracing

log = structlog.get_logger(__name__)

Job = Callable[[Context], Awaitable[int]]


@dataclass(slots=True)
class JobStats:
    runs: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class JobRunner:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stats = JobStats()
        s = ctx.settings
        self.jobs: dict[str, tuple[Job, float]] = {
            "expire_holds": (expire_holds, s.expiry_interval),
            "send_reminders": (send_due_reminders, s.reminder_interval),
            "refresh_views": (refresh_views, s.views_refresh_interval),
        }
        self.tasks: list[asyncio.Task[None]] = []

    async def run_job(self, name: str) -> int:
        job, _ = self.jobs[name]
        tracing: Tracing | None = self.ctx.extras.get("tracing")
        try:
            if tracing is None:
                items = await job(self.ctx)
            else:
                # a trace per run: its SQL spans, and the events it writes (expired holds) carry it
                with tracing.root_span(f"job {name}", SpanKind.INTERNAL, {"booking.job": name}) as span:
                    items = await job(self.ctx)
                    span.set_attribute("booking.job.items", items)
        except Exception:
            self.stats.errors[name] += 1
            log.exception("job failed", job=name)
            return 0
        self.stats.runs[name] += 1
        self.stats.items[name] += items
        if items:
            log.debug("job ran", job=name, items=items)
        return items

    async def _loop(self, name: str, interval: float) -> None:
        while True:
            await self.run_job(name)
            await asyncio.sleep(interval)

    async def start(self) -> None:
        for name, (_, interval) in self.jobs.items():
            self.tasks.append(asyncio.create_task(self._loop(name, interval), name=f"job:{name}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
