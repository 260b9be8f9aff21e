"""The transport end to end over real sockets: exact bytes, concurrency, events, bad frames."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from booking_rpc.client import Client, ConnectionClosed, RemoteError
from booking_rpc.errors import RpcError
from booking_rpc.handlers.system import router as system_router
from booking_rpc.router import Router
from booking_rpc.wire.json_codec import encode_frame
from booking_rpc.wire.messages import request_message
from tests.fixtures.server import MakeServer, RunningServer


async def raw_exchange(port: int, payload: bytes, *, read_timeout: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    chunks = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks += chunk
    except TimeoutError:
        pass
    writer.close()
    return chunks


async def test_ping_reply_bytes_match_nestjs(transport_server: RunningServer) -> None:
    request = b'{"pattern":"ping","data":{},"id":"abc"}'
    reply = await raw_exchange(transport_server.port, str(len(request)).encode() + b"#" + request, read_timeout=0.3)
    body = '{"response":"pong","isDisposed":true,"id":"abc"}'
    assert reply == f"{len(body)}#{body}".encode()


async def test_unknown_pattern_gets_the_nestjs_no_handler_frame(transport_server: RunningServer) -> None:
    request = b'{"pattern":"nope","data":{},"id":7}'
    reply = await raw_exchange(transport_server.port, str(len(request)).encode() + b"#" + request, read_timeout=0.3)
    body = '{"id":7,"status":"error","err":"There is no matching message handler defined in the remote service."}'
    assert reply == f"{len(body)}#{body}".encode()


async def test_event_gets_no_bytes_back(transport_server: RunningServer) -> None:
    event = b'{"pattern":"echo","data":{"a":1}}'
    reply = await raw_exchange(transport_server.port, str(len(event)).encode() + b"#" + event, read_timeout=0.3)
    assert reply == b""


async def test_utf16_lengths_round_trip(rpc_client: Client) -> None:
    text = {"text": "猫🐕 é \ud83d"}
    assert await rpc_client.send("echo", text) == text


def with_sleeper(pattern: str, seconds: float) -> Router:
    """The system routes plus `pattern`, a handler that sleeps `seconds` then answers its own name."""
    router = Router()
    router.include(system_router)

    @router.message(pattern)
    async def sleeper(payload: Any, ctx: Any) -> str:
        await asyncio.sleep(seconds)
        return pattern

    return router


async def test_replies_go_out_as_requests_finish(make_server: MakeServer) -> None:
    server = await make_server(with_sleeper("slow", 0.3))
    async with Client("127.0.0.1", server.port) as client:
        slow_call = asyncio.create_task(client.send("slow", {}))
        await asyncio.sleep(0.01)
        assert await asyncio.wait_for(client.send("ping", {}), 0.2) == "pong"
        assert not slow_call.done()
        assert await slow_call == "slow"


async def test_a_batch_of_eager_replies_shares_one_write(make_server: MakeServer) -> None:
    server = await make_server(with_sleeper("nap", 0.01))
    # 64 pings in one TCP write: answered eagerly while the batch is read, in one socket write
    batch = b"".join(encode_frame(request_message("ping", {}, str(i))) for i in range(64))
    before = server.stats.writes
    replies = await raw_exchange(server.port, batch, read_timeout=0.3)
    assert replies.count(b'"response":"pong"') == 64
    assert server.stats.writes - before == 1
    # handlers that suspend: a lone reply is written as its handler returns, no reply waits or is lost
    async with Client("127.0.0.1", server.port) as client:
        before = server.stats.writes
        assert await asyncio.gather(*(client.send("nap", {}) for _ in range(3))) == ["nap"] * 3
        assert 1 <= server.stats.writes - before <= 3  # never more than one write per reply
        before = server.stats.writes
        assert await client.send("nap", {}) == "nap"
        assert server.stats.writes - before == 1  # a lone reply: exactly one write, nothing held back


async def test_domain_error_has_the_structured_shape(make_server: MakeServer) -> None:
    router = Router()

    @router.message("full")
    async def full(payload: Any, ctx: Any) -> None:
        raise RpcError("SLOT_FULL", "no capacity left", {"slot_id": "s1"})

    server = await make_server(router)
    async with Client("127.0.0.1", server.port) as client:
        with pytest.raises(RemoteError) as info:
            await client.send("full", {})
    assert info.value.err == {
        "status": "error",
        "statusCode": 409,
        "code": "SLOT_FULL",
        "message": "no capacity left",
        "details": {"slot_id": "s1"},
    }


async def test_bad_frame_closes_only_that_connection(transport_server: RunningServer, rpc_client: Client) -> None:
    reply = await raw_exchange(transport_server.port, b"abc#{}", read_timeout=1.0)
    assert reply == b""
    assert transport_server.stats.frame_errors["corrupted_length"] == 1
    assert await rpc_client.send("ping", {}) == "pong"


async def test_oversize_declared_length_is_refused_before_the_body(make_server: MakeServer) -> None:
    server = await make_server(max_frame=100)
    reply = await raw_exchange(server.port, b"1000#{", read_timeout=1.0)
    assert reply == b""
    assert server.stats.frame_errors["frame_too_large"] == 1


async def test_many_concurrent_requests_on_one_connection(rpc_client: Client) -> None:
    results = await asyncio.gather(*(rpc_client.send("echo", i) for i in range(500)))
    assert results == list(range(500))


async def test_msgpack_listener(transport_server: RunningServer) -> None:
    assert transport_server.msgpack_port is not None
    async with Client("127.0.0.1", transport_server.msgpack_port, codec="msgpack") as client:
        assert await client.send("echo", {"n": [1, 2, 3], "t": "猫"}) == {"n": [1, 2, 3], "t": "猫"}


async def test_graceful_shutdown_finishes_in_flight_then_cancels_stragglers(make_server: MakeServer) -> None:
    router = Router()

    @router.message("sleep")
    async def sleep(payload: Any, ctx: Any) -> float:
        await asyncio.sleep(float(payload))
        return float(payload)

    server = await make_server(router)
    port = server.port
    async with Client("127.0.0.1", port) as client:
        quick = asyncio.create_task(client.send("sleep", 0.2))
        slow = asyncio.create_task(client.send("sleep", 30))
        await asyncio.sleep(0.05)
        await server.shutdown(1.0)
        assert await quick == 0.2  # finished within the deadline and answered
        with pytest.raises(ConnectionClosed):  # cancelled at the deadline: the connection closes under it
            await slow
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer accepting


async def test_eager_handlers_that_suspend_still_complete_and_cancel(make_server: MakeServer) -> None:
    router = Router()
    started = asyncio.Event()

    @router.message("nap", eager=True)
    async def nap(payload: Any, ctx: Any) -> Any:
        started.set()
        await asyncio.sleep(float(payload))
        await asyncio.sleep(0)
        return payload

    @router.message("boom", eager=True)
    async def boom(payload: Any, ctx: Any) -> Any:
        await asyncio.sleep(0.01)
        raise RpcError("CONFLICT", "after a suspension")

    server = await make_server(router)
    port = server.port
    async with Client("127.0.0.1", port) as client:
        assert await asyncio.gather(*(client.send("nap", 0.01 * i) for i in range(5))) == [0.01 * i for i in range(5)]
        with pytest.raises(RemoteError) as info:
            await client.send("boom", None)
        assert info.value.code == "CONFLICT"
        started.clear()
        long_nap = asyncio.create_task(client.send("nap", 30))
        await started.wait()
        await server.shutdown(0.1)  # the eager handler's Task is cancelled at the deadline
        with pytest.raises(ConnectionClosed):
            await long_nap
