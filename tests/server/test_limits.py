"""Limits and TLS over real sockets: stalled peers, slow readers, too many connections, backpressure, mTLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from booking_rpc.client import Client, ConnectionClosed, RemoteError, RequestTimeout
from booking_rpc.router import Router
from booking_rpc.server.tls import client_context, server_context
from tests.fixtures.server import MakeServer


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_peer_stalling_mid_frame_is_dropped(make_server: MakeServer) -> None:
    server = await make_server(incomplete_message_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b'40#{"pattern":"ping"')  # and then nothing
    assert await read_until_closed(reader, 2.0) == b""
    assert server.stats.dropped["incomplete_message_timeout"] == 1
    writer.close()


async def test_idle_connection_with_nothing_buffered_is_kept(make_server: MakeServer) -> None:
    server = await make_server(incomplete_message_timeout=0.1)
    async with Client("127.0.0.1", server.port) as client:
        await asyncio.sleep(0.3)
        assert await client.send("ping", {}) == "pong"


async def test_max_connections_refuses_the_extra_one(make_server: MakeServer) -> None:
    server = await make_server(max_connections=2)
    async with Client("127.0.0.1", server.port) as a, Client("127.0.0.1", server.port) as b:
        assert await a.send("ping", {}) == "pong" and await b.send("ping", {}) == "pong"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        with pytest.raises((ConnectionResetError, ConnectionError)):
            writer.write(b'39#{"pattern":"ping","data":{},"id":"x1"}')
            await writer.drain()
            assert await read_until_closed(reader, 2.0) == b""
            raise ConnectionResetError  # closed without a reply is the expected outcome too
        assert server.stats.connections_refused == 1


def gated_router(gate: asyncio.Event) -> Router:
    """`wait` answers its payload once the gate opens; `ping` (eager) at once."""
    router = Router()

    @router.message("wait")
    async def wait(payload: Any, ctx: Any) -> Any:
        await gate.wait()
        return payload

    @router.message("ping", eager=True)
    async def ping(payload: Any, ctx: Any) -> str:
        return "pong"

    return router


async def test_in_flight_cap_pauses_reading_and_loses_nothing(make_server: MakeServer) -> None:
    gate = asyncio.Event()
    server = await make_server(gated_router(gate), max_in_flight=8)
    async with Client("127.0.0.1", server.port) as client:
        calls = [asyncio.create_task(client.send("wait", i)) for i in range(100)]
        await asyncio.sleep(0.2)
        assert server.stats.in_flight <= 8  # reading paused at the cap: the rest wait in the socket
        gate.set()
        assert await asyncio.gather(*calls) == list(range(100))


async def test_a_flood_over_many_connections_is_refused_at_once_not_queued(make_server: MakeServer) -> None:
    gate = asyncio.Event()
    server = await make_server(gated_router(gate), max_in_flight=256, max_requests_in_flight=40)
    clients = [await Client.connect("127.0.0.1", server.port) for _ in range(10)]
    try:
        calls = [asyncio.create_task(clients[i % 10].send("wait", i, timeout=5)) for i in range(200)]
        async with asyncio.timeout(2):
            while server.stats.overloaded < 160:
                await asyncio.sleep(0.01)
        assert server.stats.in_flight == 40  # the rest were answered, not queued
        assert await clients[0].send("ping", None, timeout=1) == "pong"  # eager routes are not held back
        gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    refused = [r for r in results if isinstance(r, RemoteError)]
    assert len(refused) == 160 and len(results) - len(refused) == 40
    assert {(r.code, r.status_code) for r in refused} == {("OVERLOADED", 503)}
    assert sorted(r for r in results if not isinstance(r, RemoteError)) == sorted(
        i for i, r in enumerate(results) if not isinstance(r, RemoteError)
    )


async def test_peer_that_never_reads_is_dropped_past_the_send_buffer(make_server: MakeServer) -> None:
    router = Router()
    gate = asyncio.Event()

    @router.message("big")
    async def big(payload: Any, ctx: Any) -> str:
        await gate.wait()
        return "x" * 100_000

    server = await make_server(router, max_send_buffer=256 * 1024)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for i in range(200):  # 20 MB of replies for a peer that reads none of them
        frame = b'{"pattern":"big","data":null,"id":"%d"}' % i
        writer.write(str(len(frame)).encode() + b"#" + frame)
    await writer.drain()
    await asyncio.sleep(0.1)
    gate.set()
    async with asyncio.timeout(5):
        while not server.stats.dropped["send_buffer_full"]:
            await asyncio.sleep(0.02)
    assert server.stats.connections_open == 0
    writer.close()
    async with Client("127.0.0.1", server.port) as other:  # everyone else is still served
        gate.set()
        assert len(await other.send("big", None)) == 100_000


async def test_client_timeout_and_closed_connection(make_server: MakeServer) -> None:
    router = Router()

    @router.message("never")
    async def never(payload: Any, ctx: Any) -> None:
        await asyncio.sleep(60)

    server = await make_server(router)
    client = await Client.connect("127.0.0.1", server.port)
    with pytest.raises(RequestTimeout):
        await client.send("never", {}, timeout=0.1)
    pending = asyncio.create_task(client.send("never", {}))
    await asyncio.sleep(0.05)
    await server.shutdown(0.1)
    with pytest.raises(ConnectionClosed):
        await pending
    await client.close()


async def test_client_reconnects_after_the_server_comes_back(make_server: MakeServer) -> None:
    first = await make_server()
    port = first.port
    client = await Client.connect("127.0.0.1", port, reconnect=True)
    assert await client.send("ping", {}) == "pong"
    await first.shutdown(0.1)
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionClosed):
        await client.send("ping", {})
    await make_server(port=port)
    assert await client.send("ping", {}) == "pong"
    await client.close()


def make_certs(tmp: Path) -> dict[str, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={'localhost' if name == 'server' else 'gateway'}",
        )
        (tmp / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {p.stem + p.suffix: p for p in tmp.iterdir()}


async def test_tls_and_mutual_tls(make_server: MakeServer, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    tls = server_context(certs["server.pem"], certs["server.key"])
    server = await make_server(ssl=tls)
    async with Client("127.0.0.1", server.port, ssl=client_context(certs["ca.pem"]), server_hostname="localhost") as c:
        assert await c.send("echo", {"t": "猫"}) == {"t": "猫"}

    mtls = server_context(certs["server.pem"], certs["server.key"], client_ca=certs["ca.pem"])
    mserver = await make_server(ssl=mtls)
    with_cert = client_context(certs["ca.pem"], certs["client.pem"], certs["client.key"])
    async with Client("127.0.0.1", mserver.port, ssl=with_cert, server_hostname="localhost") as c:
        assert await c.send("ping", {}) == "pong"
    without_cert = await Client.connect(
        "127.0.0.1", mserver.port, ssl=client_context(certs["ca.pem"]), server_hostname="localhost"
    )
    with pytest.raises((ConnectionClosed, ssl.SSLError, RequestTimeout)):
        await without_cert.send("ping", {}, timeout=2.0)
    await without_cert.close()
