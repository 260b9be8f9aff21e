"""The NestJS peer of bench.peer and bench.flow_peer (bench/nest_peer/) stays a fair comparison: it runs
booking-rpc's own SQL statements, a genuine NestJS client gets from it the reply shapes booking-rpc gives (the
published schemas) for find, hold, confirm and the user's bookings, and it writes the outbox rows booking-rpc
writes. Not timed: this keeps the benches from rotting."""

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
from tests.helpers import assert_reply_published, hold_body, make_service, make_slot, outbox, validate_outbox

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

    def scenario() -> list[dict[str, Any]]:  # fresh user and pet each call
        return [
            {"op": "send", "pattern": "booking.slots.find", "data": find},
            {"op": "send", "pattern": "booking.reservation.create", "data": hold_body(cat, slot)},
            {"op": "send", "pattern": "booking.slots.find", "data": bad},
        ]

    def flow(held: dict[str, Any]) -> list[dict[str, Any]]:
        actor = {"id": held["user_id"], "role": "user"}
        confirm = {"actor": actor, "user_id": held["user_id"], "reservation_id": held["id"], "lock_id": held["lock_id"]}
        payment = {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"}
        return [
            {"op": "send", "pattern": "booking.reservation.confirm", "data": {**confirm, "payment": payment}},
            {"op": "send", "pattern": "booking.booking.find", "data": {"actor": actor, "user_id": held["user_id"]}},
        ]

    peer = await asyncio.to_thread(start_peer, db_url, 2)
    try:
        answers = {}
        for name, port in (("ours", app_server.port), ("theirs", int(peer.info["port"]))):  # type: ignore[call-overload]
            first = await nest_client(harness, port, scenario())
            answers[name] = first + await nest_client(harness, port, flow(first[1]["ok"]))
    finally:
        await asyncio.to_thread(peer.stop)
    ours, theirs = answers["ours"], answers["theirs"]

    for results in (ours, theirs):
        page, held, refused, booking, bookings = (r.get("ok", r.get("error")) for r in results)
        assert_reply_published("booking.slots.find", page)
        assert_reply_published("booking.reservation.create", held)
        assert_reply_published("booking.reservation.confirm", booking)
        assert_reply_published("booking.booking.find", bookings)
        assert [s["id"] for s in page["items"]] == [str(slot)] and page["next_cursor"] is None
        assert held["status"] == "pending" and held["slot_id"] == str(slot)
        assert (refused["status"], refused["statusCode"], refused["code"]) == ("error", 400, "VALIDATION_FAILED")
        assert [d["field"] for d in refused["details"]] == ["service_id"]
        assert (booking["status"], booking["reservation_id"], booking["payment"]["status"]) == (
            "confirmed",
            held["id"],
            "success",
        )
        assert [b["id"] for b in bookings["items"]] == [booking["id"]]
    # the same fields and the same forms (instants with PostgreSQL's microseconds, money as "100.00")
    for i, key in ((1, None), (3, None), (4, "items")):
        mine, its = ours[i]["ok"], theirs[i]["ok"]
        assert mine.keys() == its.keys()
        if key:
            assert mine[key][0].keys() == its[key][0].keys()
    assert ours[0]["ok"]["items"][0].keys() == theirs[0]["ok"]["items"][0].keys()
    assert theirs[0]["ok"]["items"][0]["booked_count"] == 1  # it saw booking-rpc's hold
    # each wrote the events booking-rpc writes, each payload its event model's own JSON
    await validate_outbox(pool)
    for event in ("reservation.created", "booking.created", "booking.confirmed", "payment.processed"):
        rows = await outbox(pool, event)
        assert len(rows) == 2, event
    created = {str(r["aggregate_id"]) for r in await outbox(pool, "reservation.created")}
    assert created == {ours[1]["ok"]["id"], theirs[1]["ok"]["id"]}
