"""The NestJS peer of bench.peer (bench/nest_peer/) stays a fair comparison: it runs booking-rpc's own SQL
statements, and a genuine NestJS client gets from it the reply shapes booking-rpc gives (the published
schemas), with the hold's outbox row written. Not timed: this keeps the bench from rotting."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.common import ensure_node_modules
from bench.peer import PEER, start_peer
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries
from booking_rpc.server.server import Server
from tests.fixtures.interop import nest_client
from tests.helpers import assert_reply_published, hold_body, make_service, make_slot, outbox

pytestmark = pytest.mark.interop


def test_the_peer_runs_the_services_own_statements(harness: Path) -> None:
    ensure_node_modules(PEER)
    out = subprocess.run(["node", str(PEER / "peer.mjs"), "--print-sql"], check=True, capture_output=True, timeout=60)
    assert json.loads(out.stdout) == dict(Queries.load().items())


async def test_the_peer_answers_as_booking_rpc_does(
    harness: Path, app_ctx: Context, pool: Pool, app_server: Server, db_url: str
) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=4, starts_in=dt.timedelta(days=2))
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date()
    find = {"service_id": str(cat.service_id), "date_from": str(day - dt.timedelta(days=1)), "date_to": str(day)}
    bad = {"service_id": "not-a-uuid", "date_from": str(day), "date_to": str(day)}

    def scenario() -> list[dict[str, Any]]:
        return [
            {"op": "send", "pattern": "booking.slots.find", "data": find},
            {"op": "send", "pattern": "booking.reservation.create", "data": hold_body(cat, slot)},
            {"op": "send", "pattern": "booking.slots.find", "data": bad},
        ]

    peer = await asyncio.to_thread(start_peer, db_url, 2)
    try:
        ours = await nest_client(harness, app_server.port, scenario())
        theirs = await nest_client(harness, int(peer.info["port"]), scenario())  # type: ignore[call-overload]
    finally:
        await asyncio.to_thread(peer.stop)

    for results in (ours, theirs):
        page, held, refused = (r.get("ok", r.get("error")) for r in results)
        assert_reply_published("booking.slots.find", page)
        assert_reply_published("booking.reservation.create", held)
        assert [s["id"] for s in page["items"]] == [str(slot)] and page["next_cursor"] is None
        assert held["status"] == "pending" and held["slot_id"] == str(slot)
        assert (refused["status"], refused["statusCode"], refused["code"]) == ("error", 400, "VALIDATION_FAILED")
        assert [d["field"] for d in refused["details"]] == ["service_id"]
    # the same fields (the peer's instants carry milliseconds, booking-rpc's microseconds: both RFC 3339)
    assert ours[0]["ok"]["items"][0].keys() == theirs[0]["ok"]["items"][0].keys()
    assert ours[1]["ok"].keys() == theirs[1]["ok"].keys()
    # the second create saw the first's unit taken: the slot counts both, and each wrote its outbox row
    assert theirs[0]["ok"]["items"][0]["booked_count"] == 1
    created = {str(r["aggregate_id"]) for r in await outbox(pool, "reservation.created")}
    assert created == {ours[1]["ok"]["id"], theirs[1]["ok"]["id"]}
    assert uuid.UUID(theirs[1]["ok"]["id"])
