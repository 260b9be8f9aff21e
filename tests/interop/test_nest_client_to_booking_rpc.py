"""The genuine NestJS 12 ClientProxy against booking-rpc: it must not tell us from a NestJS microservice."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from booking_rpc.errors import RpcError
from booking_rpc.handlers.system import router as system_router
from booking_rpc.router import Router
from booking_rpc.server.server import Server
from tests.fixtures.interop import nest_client
from tests.fixtures.server import MakeServer

pytestmark = pytest.mark.interop
NO_HANDLER = "There is no matching message handler defined in the remote service."


def interop_router() -> Router:
    router = Router()
    router.include(system_router)

    @router.message("interop.stream")
    async def stream(payload: Any, ctx: Any) -> AsyncIterator[int]:
        for i in (1, 2, 3):
            yield i

    @router.message("interop.fail")
    async def fail(payload: Any, ctx: Any) -> None:
        raise RpcError("SLOT_FULL", "no capacity left", {"slot_id": "s-1"})

    @router.message({"cmd": "sum", "role": "math"})
    async def total(payload: list[int], ctx: Any) -> int:
        return sum(payload)

    @router.message("interop.none")
    async def nothing(payload: Any, ctx: Any) -> None:
        return None

    return router


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server(interop_router(), None, msgpack_port=0)


async def test_requests_replies_and_errors(harness: Path, server: Server) -> None:
    scenario = [
        {"op": "send", "pattern": "ping", "data": {}},
        {"op": "send", "pattern": "echo", "data": {"text": "猫🐕", "astral": "𝄞𓀀", "lone": "\ud83d", "n": 1.5}},
        {"op": "emit", "pattern": "echo", "data": {"ignored": True}},
        {"op": "send", "pattern": "ping", "data": {}},
        {"op": "send", "pattern": {"cmd": "sum", "role": "math"}, "data": [1, 2, 3]},
        {"op": "send", "pattern": {"role": "math", "cmd": "sum"}, "data": [4, 5]},
        {"op": "send", "pattern": '{"role":"math","cmd":"sum"}', "data": [10]},
        {"op": "send", "pattern": "no.such.pattern", "data": {}},
        {"op": "send", "pattern": "interop.fail", "data": {}},
        {"op": "send_all", "pattern": "interop.stream", "data": {}},
        {"op": "send", "pattern": "booking.reservation.create", "data": {}},
    ]
    results = await nest_client(harness, server.port, scenario)
    assert results[0] == {"ok": "pong"}
    assert results[1] == {"ok": {"text": "猫🐕", "astral": "𝄞𓀀", "lone": "\ud83d", "n": 1.5}}
    assert results[2] == {"ok": None}  # emit: written, no reply
    assert results[3] == {"ok": "pong"}  # the event did not disturb the connection
    assert [r["ok"] for r in results[4:7]] == [6, 9, 10]
    assert results[7] == {"error": NO_HANDLER}
    assert results[8] == {
        "error": {
            "status": "error",
            "statusCode": 409,
            "code": "SLOT_FULL",
            "message": "no capacity left",
            "details": {"slot_id": "s-1"},
        }
    }
    assert results[9] == {"ok": [1, 2, 3]}
    assert results[10] == {"error": NO_HANDLER}  # the system router alone has no booking patterns


async def test_handler_returning_nothing_completes_empty(harness: Path, server: Server) -> None:
    [result] = await nest_client(harness, server.port, [{"op": "send_all", "pattern": "interop.none", "data": {}}])
    assert result == {"ok": []}  # {"isDisposed":true} with no response, as NestJS sends for undefined


async def test_a_thousand_concurrent_sends_on_one_client(harness: Path, server: Server) -> None:
    [result] = await nest_client(harness, server.port, [{"op": "send", "pattern": "echo", "data": 7, "count": 1000}])
    assert result == {"ok": [7] * 1000}
    assert server.stats.requests_total == 1000


async def test_four_mebibyte_payload(harness: Path, server: Server) -> None:
    blob = base64.b64encode(bytes(range(256)) * (3 * 1024 * 4)).decode()  # 4 MiB of text
    assert len(blob) == 4 * 1024 * 1024
    [result] = await nest_client(
        harness, server.port, [{"op": "send", "pattern": "echo", "data": {"blob": blob}, "timeout_ms": 30000}]
    )
    assert result == {"ok": {"blob": blob}}


async def test_msgpack_socket_class_against_our_msgpack_listener(harness: Path, server: Server) -> None:
    assert server.msgpack_port is not None
    results = await nest_client(
        harness,
        server.msgpack_port,
        [
            {"op": "send", "pattern": "echo", "data": {"text": "猫🐕", "n": [1, 2.5]}},
            {"op": "send", "pattern": "interop.fail", "data": {}},
            {"op": "send", "pattern": "nope", "data": {}},
        ],
        msgpack=True,
    )
    assert results[0] == {"ok": {"text": "猫🐕", "n": [1, 2.5]}}
    assert results[1]["error"]["code"] == "SLOT_FULL"
    assert results[2] == {"error": NO_HANDLER}
