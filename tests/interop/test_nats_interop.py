"""NestJS 12 `Transport.NATS` against booking-rpc: the genuine ClientNats gets from booking-rpc byte for byte
the replies a genuine ServerNats sends for the same handlers (both runs wiretapped on the NATS server), and a
genuine ServerNats `@EventPattern` receives the events the relay publishes to JetStream."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from booking_rpc.config import Settings
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries
from booking_rpc.errors import RpcError
from booking_rpc.events.relay import OutboxRelay
from booking_rpc.router import Router
from booking_rpc.server.nats import NatsTransport
from booking_rpc.wire.json_codec import parse_json
from tests.fixtures.interop import nest_client, nest_server
from tests.helpers import book

pytestmark = pytest.mark.interop

ERROR = {
    "status": "error",
    "statusCode": 409,
    "code": "SLOT_FULL",
    "message": "no capacity left",
    "details": {"slot_id": "s-1"},
}
SCENARIO: list[dict[str, Any]] = [
    {"op": "send", "pattern": "ping", "data": {}},
    {"op": "send", "pattern": "echo", "data": {"text": "猫🐕 ünï", "astral": "𝄞𓀀", "lone": "\ud83d", "n": 1.5}},
    {"op": "send", "pattern": "echo", "data": None},
    {"op": "send", "pattern": "echo", "data": [1, "two", {"three": 3}]},
    {"op": "send", "pattern": {"cmd": "sum", "role": "math"}, "data": [1, 2, 3]},
    {"op": "send", "pattern": {"role": "math", "cmd": "sum"}, "data": [4, 5]},
    {"op": "send", "pattern": "fail", "data": ERROR},
    {"op": "send", "pattern": "nothing", "data": {}},
    {"op": "send_all", "pattern": "stream", "data": [1, 2, 3]},
    {"op": "send", "pattern": "no.such.pattern", "data": {}, "timeout_ms": 1500},
    {"op": "emit", "pattern": "noted", "data": {"n": 1}},
    {"op": "send", "pattern": "ping", "data": {}},
]


def nest_like_router(noted: list[Any]) -> Router:
    """booking-rpc handlers doing what tests/interop/nest_server.mjs's do."""
    router = Router()

    @router.message("ping")
    async def ping(payload: Any, ctx: Any) -> str:
        return "pong"

    @router.message("echo")
    async def echo(payload: Any, ctx: Any) -> Any:
        return payload

    @router.message({"cmd": "sum", "role": "math"})
    async def total(payload: list[int], ctx: Any) -> int:
        return sum(payload)

    @router.message("fail")
    async def fail(payload: dict[str, Any], ctx: Any) -> None:
        raise RpcError(payload["code"], payload["message"], payload["details"], payload["statusCode"])

    @router.message("nothing")
    async def nothing(payload: Any, ctx: Any) -> None:
        return None

    @router.message("stream")
    async def stream(payload: list[Any], ctx: Any) -> AsyncIterator[Any]:
        for item in payload:
            yield item

    @router.event("noted")
    async def note(payload: Any, ctx: Any) -> None:
        noted.append(payload)

    return router


async def wiretapped_run(harness: Path, nats_url: str) -> tuple[list[Any], list[bytes]]:
    """The ClientNats scenario's results and every reply's bytes, ids replaced by the request's index."""
    tap = await nats.connect(nats_url)
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await tap.subscribe(">", cb=record)
    await tap.flush()
    try:
        results = await nest_client(harness, 0, SCENARIO, nats=nats_url)
        await tap.flush()
        await asyncio.sleep(0.2)
    finally:
        await tap.close()
    ids: dict[str, int] = {}
    replies = []
    for msg in seen:
        if msg.subject.startswith("_INBOX."):
            replies.append(msg)
        else:
            request = parse_json(msg.data)  # JSON.parse's rules: the lone surrogate
            if isinstance(request, dict) and "id" in request:
                ids[request["id"]] = len(ids)
    normalised = [
        re.sub(rb'"id":"([^"]+)"', lambda m: b'"id":"#%d"' % ids[m.group(1).decode()], msg.data)
        + b" headers=%r" % (msg.headers,)
        for msg in replies
    ]
    return results, normalised


async def test_client_nats_gets_the_bytes_a_nest_server_nats_sends(harness: Path, nats_url: str) -> None:
    async with nest_server(harness, ["noted"], nats=nats_url, queue="nest-interop") as nest:
        nest_results, nest_replies = await wiretapped_run(harness, nats_url)
        await nest.wait_for_events(1)
    noted: list[Any] = []
    transport = NatsTransport(nest_like_router(noted), None, servers=[nats_url], queue="booking-rpc-interop")
    await transport.start()
    try:
        await transport.wait_ready()
        ours_results, our_replies = await wiretapped_run(harness, nats_url)
    finally:
        await transport.shutdown(2.0)
    assert ours_results == nest_results
    assert our_replies == nest_replies
    assert len(our_replies) == 11  # 9 requests answered, one of them a stream of 3 frames
    assert nest_results[1]["ok"] == SCENARIO[1]["data"]
    assert nest_results[2]["error"]["message"] == "The invalid data or message pattern (undefined/null)"
    assert [r["ok"] for r in nest_results[4:6]] == [6, 9]
    assert nest_results[6] == {"error": ERROR}
    assert nest_results[8] == {"ok": [1, 2, 3]}
    # no subscriber on an unknown pattern's subject: ClientNats waits until its own timeout, as with NestJS
    assert nest_results[9] == {"error": {"name": "TimeoutError", "message": "Timeout has occurred"}}
    assert noted == [{"n": 1}] and nest.events == [{"pattern": "noted", "data": {"n": 1}}]


async def test_server_nats_event_pattern_receives_the_jetstream_events(
    harness: Path, app_ctx: Context, pool: Pool, nats_url: str, jetstream_stream: str
) -> None:
    booked = await book(app_ctx, pool, starts_in=dt.timedelta(days=3))
    async with pool.acquire() as conn:
        expected = await conn.fetch("SELECT event_type, payload FROM booking_events_outbox ORDER BY seq")
    wanted = sorted({r["event_type"] for r in expected})
    assert "booking.confirmed" in wanted
    settings = Settings(nats_url=nats_url, events_nats=True, nats_stream=jetstream_stream)
    async with nest_server(harness, wanted, nats=nats_url, queue="nest-events") as nest:
        relay = OutboxRelay(Context(pool=pool, sql=Queries.load(), settings=settings), [])
        await relay.start()
        try:
            received = await nest.wait_for_events(len(expected), timeout=20)
        finally:
            await relay.stop()
    assert [(e["pattern"], e["data"]) for e in received] == [(r["event_type"], r["payload"]) for r in expected]
    confirmed = [e["data"] for e in received if e["pattern"] == "booking.confirmed"]
    assert confirmed[0]["booking_id"] == str(booked.booking.id)
