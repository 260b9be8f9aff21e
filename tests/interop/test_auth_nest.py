"""A genuine NestJS 12.1.1 gateway forwards its caller's token in packet metadata (setOnDispatchHook)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from booking_rpc.app import build_context
from booking_rpc.db.pool import Pool
from booking_rpc.server.server import Server
from tests.fixtures.app import serving
from tests.fixtures.interop import nest_client
from tests.fixtures.tokens import bearer, claims, hs256, jwt_settings
from tests.helpers import hold_body, make_service, make_slot

pytestmark = pytest.mark.interop


@pytest.fixture
async def jwt_server(pool: Pool) -> AsyncIterator[Server]:
    settings = jwt_settings()
    async with serving(build_context(settings, pool)) as server:
        yield server


async def test_nest_gateway_token_in_metadata_is_served_and_none_is_refused(
    harness: Path, jwt_server: Server, pool: Pool
) -> None:
    settings = jwt_settings()
    cat = await make_service(build_context(settings, pool))
    slot = await make_slot(pool, cat.service_id)
    user = uuid.uuid4()
    body = hold_body(cat, slot, user)
    del body["actor"]
    token = hs256(claims(user_id=user))
    missing, held = await nest_client(
        harness,
        jwt_server.port,
        [
            {"op": "send", "pattern": "booking.reservation.create", "data": body},
            {"op": "send", "pattern": "booking.reservation.create", "data": body, "metadata": bearer(token)},
        ],
    )
    assert missing["error"]["code"] == "UNAUTHENTICATED"
    assert missing["error"]["statusCode"] == 401
    assert held["ok"]["user_id"] == str(user)
    assert held["ok"]["status"] == "pending"
