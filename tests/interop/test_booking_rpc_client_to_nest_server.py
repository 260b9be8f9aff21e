"""Our Python client against a genuine NestJS 12 TCP microservice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from booking_rpc.client import Client, RemoteError
from tests.fixtures.interop import nest_server

pytestmark = pytest.mark.interop


async def test_send_emit_errors_and_streams(harness: Path) -> None:
    async with nest_server(harness, events=["booking.confirmed"]) as nest, Client("127.0.0.1", nest.port) as client:
        assert await client.send("echo", {"text": "猫🐕", "id": 1}) == {"text": "猫🐕", "id": 1}
        assert await client.send("sum", [1, 2, 3]) == 6
        with pytest.raises(RemoteError) as info:
            await client.send("fail", "bad thing")
        assert info.value.err == {"status": "error", "message": "bad thing"}
        assert [x async for x in client.stream("stream", [1, 2, 3])] == [1, 2, 3]
        with pytest.raises(RemoteError) as missing:
            await client.send("nope", {})
        assert missing.value.err == "There is no matching message handler defined in the remote service."
        await client.emit("booking.confirmed", {"booking_id": "b-1", "text": "猫🐕"})
        events = await nest.wait_for_events(1)
        assert events == [{"pattern": "booking.confirmed", "data": {"booking_id": "b-1", "text": "猫🐕"}}]
        results = await asyncio.gather(*(client.send("echo", i) for i in range(200)))
        assert results == list(range(200))
