"""The per-user token bucket on reservation.create: a burst, then the rate; other users untouched."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import pytest

from booking_rpc.app import build_context
from booking_rpc.client import Client, RemoteError
from booking_rpc.config import Settings
from booking_rpc.db.pool import Pool
from booking_rpc.deadline import deadline_middleware
from booking_rpc.rate_limits import MAX_BUCKETS, TokenBuckets, install
from booking_rpc.router import Call, Router
from tests.fixtures.app import serving
from tests.helpers import hold_body, make_service, make_slot


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate_per_second=2.0, capacity=3)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.5)
    assert buckets.take("b", 100.0) == 0.0  # someone else
    assert buckets.take("a", 100.5) == 0.0  # half a second later: one token back
    assert buckets.take("a", 100.5) > 0.0
    assert buckets.take("a", 110.0) == 0.0  # refilled, never above capacity
    assert [buckets.take("a", 110.0) for _ in range(3)][-1] > 0.0


def test_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(rate_per_second=1.0, capacity=1)
    for i in range(MAX_BUCKETS):
        buckets.take(str(i), 0.0)
    buckets.take("late", 5.0)  # everyone before has refilled: forgotten
    assert len(buckets.buckets) == 1


async def test_over_the_socket_a_user_past_the_burst_is_rate_limited(pool: Pool) -> None:
    settings = Settings(port=0, metrics_enabled=False, jobs_enabled=False, hold_rate_per_minute=6.0, hold_rate_burst=2)
    ctx = build_context(settings, pool)
    cat = await make_service(ctx)
    slot = await make_slot(pool, cat.service_id, capacity=10)
    user = uuid.uuid4()
    async with serving(ctx) as server, Client("127.0.0.1", server.port) as client:
        codes = []
        for _ in range(3):
            try:
                await client.send("booking.reservation.create", hold_body(cat, slot, user))
                codes.append("OK")
            except RemoteError as err:
                codes.append(err.err["code"])
                last = err.err
        # the second is refused by the database (one hold per user and slot), the third by the rate
        assert codes == ["OK", "ALREADY_HELD", "RATE_LIMITED"]
        assert last["statusCode"] == 429 and 0 < last["details"]["retry_after_ms"] <= 10_000
        assert (await client.send("booking.reservation.create", hold_body(cat, slot)))["status"] == "pending"
        route = server.router.lookup("booking.reservation.create")
        assert route is not None and route.stats.outcomes["RATE_LIMITED"] == 1


async def test_the_limit_and_the_route_add_no_coroutine_to_a_request() -> None:
    """Neither the limit nor the route's validation step is a coroutine of its own: the handler runs with
    only invoke's frame and the deadline's (the middleware that works after the route) above it."""
    router = Router()
    stack: list[str] = []

    @router.message("booking.reservation.create")
    async def create(payload: dict[str, Any], ctx: Any) -> str:
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name != "invoke":
            stack.append(frame.f_code.co_name)
            frame = frame.f_back
        return "held"

    install(router, Settings(hold_rate_per_minute=60.0))
    router.use(deadline_middleware(5.0))
    route = router.lookup("booking.reservation.create")
    assert route is not None
    assert await asyncio.create_task(route.invoke({"user_id": "u"}, None, Call("tcp"))) == "held"
    assert stack == ["create", "deadline"]
