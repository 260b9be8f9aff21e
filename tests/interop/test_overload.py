"""A flood from the genuine NestJS 12 client: past the service's in-flight cap every request gets a
structured OVERLOADED error at once, none a timeout, and ping keeps answering."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.interop import nest_client
from tests.fixtures.service import start_service

pytestmark = pytest.mark.interop
FLOOD = 2000


async def test_nest_client_flood_gets_errors_not_timeouts(harness: Path, db_url: str) -> None:
    env = {"DATABASE_URL": db_url, "BOOKING_RPC_MIGRATE_ON_START": "false", "BOOKING_RPC_MAX_REQUESTS_IN_FLIGHT": "32"}
    service = await asyncio.to_thread(start_service, env)
    try:
        find = {"service_id": str(uuid.uuid4()), "date_from": "2030-01-01", "date_to": "2030-01-07"}
        started = time.monotonic()
        flood, ping = await nest_client(
            harness,
            service.port,
            [
                {
                    "op": "send",
                    "pattern": "booking.slots.find",
                    "data": find,
                    "count": FLOOD,
                    "settle": True,
                    "timeout_ms": 8000,
                },
                {"op": "send", "pattern": "ping", "data": {}},
            ],
        )
        took = time.monotonic() - started
    finally:
        await asyncio.to_thread(service.stop)
    results = flood["settled"]
    assert len(results) == FLOOD
    errors = [r["error"] for r in results if "error" in r]
    assert errors, "the flood never reached the cap"
    assert all(isinstance(e, dict) and e.get("code") == "OVERLOADED" and e.get("statusCode") == 503 for e in errors)
    assert all(r["ok"]["items"] == [] for r in results if "ok" in r)  # the rest were answered in full
    assert ping == {"ok": "pong"}
    assert took < 8.0  # every answer came, none waited for the client's timeout
