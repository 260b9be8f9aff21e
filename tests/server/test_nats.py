"""The NATS transport on a real nats-server: request/reply bytes, events, headers, limits, queue groups,
NATS down and back, graceful drain. The peer is nats-py publishing raw bytes, as a NestJS ClientNats does
(the genuine ClientNats is in tests/interop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from booking_rpc.devnats import NatsServer
from booking_rpc.errors import RpcError
from booking_rpc.router import Call, Route, Router
from booking_rpc.server.nats import NatsRefused, NatsTransport, shown_url
from booking_rpc.server.nats_client import DirectClient
from tests.helpers import relay, wait_for

# How long a test waits for a reply or for the subscriptions: generous, since a loaded machine (the whole
# suite beside other work) can stall a process for seconds; a passing test never waits that long.
REPLY_WAIT = 30.0
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Greeting(BaseModel):
    name: str


def build_router(seen: dict[str, Any]) -> Router:
    router = Router()

    @router.message("echo")
    async def echo(payload: Any, ctx: Any) -> Any:
        return payload

    @router.message({"cmd": "sum", "v": 1})
    async def total(payload: list[int], ctx: Any) -> int:
        return sum(payload)

    @router.message("greet")
    async def greet(payload: Greeting, ctx: Any) -> str:
        return f"hello {payload.name}"

    @router.message("fail")
    async def fail(payload: Any, ctx: Any) -> None:
        raise RpcError("SLOT_FULL", "The slot is full", {"slot": 1})

    @router.message("nothing")
    async def nothing(payload: Any, ctx: Any) -> None:
        return None

    @router.message("count")
    async def count(payload: int, ctx: Any) -> AsyncIterator[int]:
        for i in range(payload):
            yield i

    @router.message("big")
    async def big(payload: int, ctx: Any) -> str:
        return "x" * payload

    @router.message("slow")
    async def slow(payload: Any, ctx: Any) -> str:
        await seen["release"].wait()
        return "done"

    @router.event("user.updated")
    async def user_updated(payload: Any, ctx: Any) -> None:
        seen.setdefault("events", []).append(payload)

    async def record_headers(route: Route, data: Any, call: Call, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        seen.setdefault("calls", []).append((route.route, call.transport, call.header("X-Trace")))
        return await call_next(data)

    router.use(record_headers)
    return router


@pytest.fixture
def seen() -> dict[str, Any]:
    return {"release": asyncio.Event()}


@pytest.fixture
async def peer(nats_url: str) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


@pytest.fixture
async def make_transport(nats_url: str, seen: dict[str, Any]) -> AsyncIterator[Callable[..., Awaitable[NatsTransport]]]:
    started: list[NatsTransport] = []

    async def make(url: str = nats_url, *, wait: bool = True, **options: Any) -> NatsTransport:
        options.setdefault("queue", "test-queue")
        transport = NatsTransport(build_router(seen), None, servers=[url], **options)
        await transport.start()
        started.append(transport)
        if wait:
            await transport.wait_ready(REPLY_WAIT)
        return transport

    yield make
    for transport in started:
        await transport.shutdown(1.0)


async def raw_request(nc: NatsClient, subject: str, body: bytes, *, frames: int = 1, headers: Any = None) -> list[Msg]:
    """Publish with a fresh reply inbox (ClientNats's way) and collect `frames` reply messages."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=frames)
    await nc.publish(subject, body, reply=inbox, headers=headers)
    replies = [await sub.next_msg(timeout=REPLY_WAIT) for _ in range(frames)]
    for reply in replies:
        assert reply.data, f"an empty reply on {subject}: {reply.headers}"
    return replies


def request(pattern: Any, data: Any, id: str = "r1") -> bytes:
    return orjson.dumps({"pattern": pattern, "data": data, "id": id})


async def send_slow(nc: NatsClient, count: int) -> Subscription:
    """`count` requests to "slow" (ids s0, s1, ...), each held until seen["release"]; their replies' inbox."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    for i in range(count):
        await nc.publish("slow", request("slow", None, f"s{i}"), reply=inbox)
    await nc.flush()
    return sub


async def test_request_gets_nestjs_reply_bytes_without_headers(make_transport: Any, peer: NatsClient) -> None:
    await make_transport()
    [reply] = await raw_request(peer, "echo", request("echo", {"note": "猫🐕", "n": 1.5}))
    assert reply.data == '{"response":{"note":"猫🐕","n":1.5},"isDisposed":true,"id":"r1"}'.encode()
    assert not reply.headers
    [reply] = await raw_request(peer, "nothing", request("nothing", None, "r2"))
    assert reply.data == b'{"isDisposed":true,"id":"r2"}'


async def test_object_pattern_is_served_on_its_normalised_subject(make_transport: Any, peer: NatsClient) -> None:
    await make_transport()
    [reply] = await raw_request(peer, '{"cmd":"sum","v":1}', request({"v": 1, "cmd": "sum"}, [1, 2, 3]))
    assert reply.data == b'{"response":6,"isDisposed":true,"id":"r1"}'


async def test_errors_have_the_one_shape(make_transport: Any, peer: NatsClient) -> None:
    await make_transport()
    [reply] = await raw_request(peer, "fail", request("fail", {}))
    assert orjson.loads(reply.data) == {
        "err": {
            "status": "error",
            "statusCode": 409,
            "code": "SLOT_FULL",
            "message": "The slot is full",
            "details": {"slot": 1},
        },
        "isDisposed": True,
        "id": "r1",
    }
    [reply] = await raw_request(peer, "greet", request("greet", {"name": 5}))
    err = orjson.loads(reply.data)["err"]
    assert err["code"] == "VALIDATION_FAILED" and err["details"][0]["field"] == "name"


async def test_streamed_items_then_completion(make_transport: Any, peer: NatsClient) -> None:
    await make_transport()
    replies = await raw_request(peer, "count", request("count", 3), frames=3)
    assert [r.data for r in replies] == [
        b'{"response":0,"id":"r1"}',
        b'{"response":1,"id":"r1"}',
        b'{"response":2,"isDisposed":true,"id":"r1"}',
    ]
    [empty] = await raw_request(peer, "count", request("count", 0, "r2"))
    assert empty.data == b'{"isDisposed":true,"id":"r2"}'


async def test_events_and_external_bodies_reach_the_event_handler(
    make_transport: Any, peer: NatsClient, seen: dict[str, Any]
) -> None:
    transport = await make_transport()
    await peer.publish("user.updated", orjson.dumps({"pattern": "user.updated", "data": {"id": 1}}))
    # neither pattern nor data: NestJS takes the whole JSON as the data of an event on the subject
    await peer.publish("user.updated", orjson.dumps({"id": 2, "name": "Ann"}))
    await peer.flush()
    async with asyncio.timeout(REPLY_WAIT):
        while len(seen.get("events", [])) < 2:
            await asyncio.sleep(0.01)
    assert seen["events"] == [{"id": 1}, {"id": 2, "name": "Ann"}]
    assert transport.stats.events_total == 2 and transport.stats.requests_total == 0


async def test_headers_reach_middleware_not_handlers(
    make_transport: Any, peer: NatsClient, seen: dict[str, Any]
) -> None:
    await make_transport()
    await raw_request(peer, "echo", request("echo", 1), headers={"x-trace": "abc"})
    assert seen["calls"] == [("echo", "nats", "abc")]


async def test_oversize_and_invalid_json_get_a_structured_error(make_transport: Any, peer: NatsClient) -> None:
    transport = await make_transport(max_payload=64)
    [reply] = await raw_request(peer, "echo", request("echo", "x" * 100))
    assert orjson.loads(reply.data) == {
        "err": {
            "status": "error",
            "statusCode": 413,
            "code": "PAYLOAD_TOO_LARGE",
            "message": "The message is larger than 64 bytes",
        },
        "isDisposed": True,
        "id": None,
    }
    [reply] = await raw_request(peer, "echo", b'{"pattern":"echo",')
    assert orjson.loads(reply.data)["err"]["code"] == "BAD_REQUEST"
    assert (transport.stats.too_large, transport.stats.invalid_json) == (1, 1)


async def test_a_reply_beyond_the_nats_max_payload_is_a_structured_error(make_transport: Any, peer: NatsClient) -> None:
    transport = await make_transport()
    limit = peer.max_payload
    [reply] = await raw_request(peer, "big", request("big", limit + 1))
    assert orjson.loads(reply.data) == {
        "err": {
            "status": "error",
            "statusCode": 413,
            "code": "PAYLOAD_TOO_LARGE",
            "message": f"The reply is larger than the NATS server's max_payload ({limit} bytes)",
            "details": {"size": limit + 1 + len(b'{"response":"","isDisposed":true,"id":"r1"}')},
        },
        "isDisposed": True,
        "id": "r1",
    }
    assert transport.stats.reply_errors == 1


async def test_in_flight_cap_refuses_with_overloaded(
    make_transport: Any, peer: NatsClient, seen: dict[str, Any]
) -> None:
    transport = await make_transport(max_in_flight=2)
    sub = await send_slow(peer, 3)
    first = await sub.next_msg(timeout=REPLY_WAIT)
    assert first.data, (first.headers, first.subject)
    refused = orjson.loads(first.data)
    assert refused["id"] == "s2" and refused["err"]["code"] == "OVERLOADED" and refused["err"]["statusCode"] == 503
    assert transport.stats.in_flight == 2  # the two it took are still running
    seen["release"].set()
    done = sorted([orjson.loads((await sub.next_msg(timeout=REPLY_WAIT)).data)["id"] for _ in range(2)])
    assert done == ["s0", "s1"]
    assert transport.stats.overloaded == 1


async def test_events_beyond_the_in_flight_cap_wait_their_turn_in_order(
    make_transport: Any, peer: NatsClient, seen: dict[str, Any]
) -> None:
    transport = await make_transport(max_in_flight=2)
    sub = await send_slow(peer, 2)
    await wait_for(lambda: transport.stats.in_flight == 2, REPLY_WAIT)
    for i in range(5):
        await peer.publish("user.updated", orjson.dumps({"pattern": "user.updated", "data": {"id": i}}))
    await peer.flush()
    await wait_for(lambda: transport.stats.events_total == 5, REPLY_WAIT)
    assert "events" not in seen  # every slot is taken: the events wait, none is refused or lost
    seen["release"].set()
    await wait_for(lambda: len(seen.get("events", [])) == 5, REPLY_WAIT)
    assert seen["events"] == [{"id": i} for i in range(5)]
    assert sorted([orjson.loads((await sub.next_msg(timeout=REPLY_WAIT)).data)["id"] for _ in range(2)]) == ["s0", "s1"]
    assert transport.stats.events_dropped == 0


async def test_queue_group_answers_each_request_once(make_transport: Any, peer: NatsClient) -> None:
    first, second = await make_transport(), await make_transport()
    inbox = peer.new_inbox()
    sub = await peer.subscribe(inbox)
    for i in range(200):
        await peer.publish("echo", request("echo", i, f"q{i}"), reply=inbox)
    ids = [orjson.loads((await sub.next_msg(timeout=REPLY_WAIT)).data)["id"] for _ in range(200)]
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.3)  # no second answer to any request
    assert sorted(ids) == sorted(f"q{i}" for i in range(200))
    assert first.stats.requests_total + second.stats.requests_total == 200
    assert first.stats.requests_total > 0 and second.stats.requests_total > 0


async def subscribe_direct_and_stuck(nc: DirectClient, got: list[bytes], released: asyncio.Event) -> None:
    """`direct.in` delivered straight into `got`; `slow.in` to a callback stuck until `released`, with room for
    one more in its queue, so its third message is a slow consumer's (nats-py's parser awaits the error
    callback then). Over the read path under test."""
    direct = await nc.subscribe("direct.in")
    nc.deliver_to(direct, lambda reply, data, headers: got.append(data))

    async def stuck(msg: Msg) -> None:
        await released.wait()

    await nc.subscribe("slow.in", cb=stuck, pending_msgs_limit=1)
    await nc.flush_all()  # one flush() can be answered before the server has the SUBs
    connection = nc._transport._io_writer.transport  # type: ignore[union-attr]
    assert type(connection.get_protocol()).__name__ == "_ParserFeed"


async def test_data_behind_a_parse_that_waits_is_parsed_after_it_in_order(nats_url: str, peer: NatsClient) -> None:
    """The client parses each read's data at once, outside a Task; nats-py's parser awaits its callbacks,
    and when one really waits (here the error callback, told of a slow consumer) the parse goes on in a
    Task and what arrives meanwhile waits behind it, as behind nats-py's own read loop: nothing is
    delivered during the wait, then everything, in order, and a PONG after it too."""
    got: list[bytes] = []
    during_wait: list[int] = []

    async def on_error(exc: Exception) -> None:
        if not isinstance(exc, nats.errors.SlowConsumerError) or during_wait:
            return
        before = len(got)
        for i in range(200):
            await peer.publish("direct.in", b"%d" % i)
        await wait_for(lambda: nc._unparsed, REPLY_WAIT)  # they reach the client while this callback waits
        during_wait.append(len(got) - before)

    nc = DirectClient()
    await nc.connect(nats_url, error_cb=on_error)
    released = asyncio.Event()
    try:
        await subscribe_direct_and_stuck(nc, got, released)
        for _ in range(3):  # one for the callback, one in its queue, the third is a slow consumer's
            await peer.publish("slow.in", b"x")
        await peer.flush()
        await wait_for(lambda: len(got) == 200, REPLY_WAIT)
        assert during_wait == [0]
        assert got == [b"%d" % i for i in range(200)]
        await nc.flush(timeout=REPLY_WAIT)
    finally:
        released.set()
        await nc.close()


async def test_data_read_before_the_server_closes_is_parsed_while_a_parse_waits(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """The server closes the connection while a parse waits (the error callback, told of a slow consumer):
    as behind nats-py's own read loop, the rest of what was read before the close is still parsed and
    delivered, and only then does the client see the end (and reconnect)."""
    server = nats_server_factory()
    got: list[bytes] = []
    waited: list[int] = []
    disconnected = asyncio.Event()
    nc = DirectClient()

    async def on_error(exc: Exception) -> None:
        if not isinstance(exc, nats.errors.SlowConsumerError) or waited:
            return
        reader = nc._transport._io_reader  # type: ignore[union-attr]
        await asyncio.to_thread(server.stop)
        await wait_for(reader.at_eof, REPLY_WAIT)  # the server's close reached the client during this wait
        waited.append(len(got))

    async def on_disconnected() -> None:
        disconnected.set()

    # the three slow ones (the third is a slow consumer's) and the five behind them reach the client in one
    # read (the server may write them in two, and the end would wait behind the second, reading paused)
    eight_at_once = relay(server, hold=lambda held: 0 < held.count(b"MSG ") < 8)
    async with eight_at_once as url:
        await nc.connect(url, error_cb=on_error, disconnected_cb=on_disconnected, reconnect_time_wait=0.1)
        peer = await nats.connect(server.url, allow_reconnect=False)
        released = asyncio.Event()
        try:
            await subscribe_direct_and_stuck(nc, got, released)
            for _ in range(3):
                await peer.publish("slow.in", b"x")
            for i in range(5):
                await peer.publish("direct.in", b"%d" % i)
            await peer.flush()
            await wait_for(lambda: waited, REPLY_WAIT)
            await wait_for(lambda: len(got) == 5, REPLY_WAIT)
            assert waited == [0] and got == [b"%d" % i for i in range(5)]
            # and then the end, as nats-py's loop meets it (its disconnected callback comes once the old
            # connection is closed: a close() before that can cancel nats-py's own wait for it)
            await asyncio.wait_for(disconnected.wait(), REPLY_WAIT)
        finally:
            released.set()
            with contextlib.suppress(Exception):
                await peer.close()
            await nc.close()


async def test_an_end_met_before_the_read_path_starts_is_not_missed(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path
) -> None:
    """The server's data and its close can reach the client between the connect handshake and the start of
    the client's read path (the connection's StreamReaderProtocol, not the client's parser, sees the end):
    the client meets that end as nats-py's own loop would (UnexpectedEOF, reconnecting) instead of staying
    "connected" to a closed connection until its ping timer notices."""
    config = tmp_path / "nats.conf"
    config.write_text('ping_interval: "100ms"\n')  # its first PING follows the handshake at once
    errors: list[Exception] = []
    disconnected = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def on_disconnected() -> None:
        disconnected.set()

    # the handshake's PONG is held until the server's next bytes, then both go with an EOF: the client's
    # socket has the PONG, more data and the end before its read loop starts
    pong_then_more = relay(
        nats_server_factory(config=config),
        hold=lambda held: held.endswith(b"PONG\r\n"),
        cut=lambda written: b"PONG\r\n" in written,
    )
    async with pong_then_more as url:
        nc = DirectClient()
        await nc.connect(url, error_cb=on_error, disconnected_cb=on_disconnected, reconnect_time_wait=REPLY_WAIT)
        try:
            await asyncio.wait_for(disconnected.wait(), REPLY_WAIT)
            assert any(isinstance(exc, nats.errors.UnexpectedEOF) for exc in errors)
        finally:
            await nc.close()


@pytest.mark.parametrize("queued", [False, True], ids=["nothing queued", "a reply queued meanwhile"])
async def test_shutdown_while_reconnecting_to_a_server_gone_deaf_is_prompt_quiet_and_complete(
    nats_server_factory: Callable[..., NatsServer], make_transport: Any, seen: dict[str, Any], queued: bool
) -> None:
    """The server stops reading what the transport writes and then goes (an EOF), so nats-py reconnects with
    the old socket's bytes unsent: its reconnect Task waits for that socket to close (for ever, here). A
    shutdown then must neither take nats-py's close() down with it (that cancels the wait, which cancels the
    stream's close future, which close() awaits next: CancelledError) nor hang in it (it drains the replies
    queued meanwhile into that socket), and must leave none of the client's Tasks behind."""
    server = nats_server_factory()
    deaf = asyncio.Event()
    peer = await nats.connect(server.url)
    before = asyncio.all_tasks()
    try:
        async with relay(server, hold=lambda held: False, cut=lambda written: b"gone" in written, deaf=deaf) as url:
            transport = await make_transport(url)
            if queued:
                await peer.publish("slow", request("slow", None, "s0"), reply=peer.new_inbox())
                await wait_for(lambda: transport.stats.in_flight == 1, REPLY_WAIT)
            deaf.set()
            connection = transport.nc._transport._io_writer.transport  # type: ignore[union-attr]

            async def reply_big(request_id: str) -> None:
                writes = transport.stats.writes
                await peer.publish("big", request("big", 1_000_000, request_id), reply=peer.new_inbox())
                await wait_for(lambda: transport.stats.writes > writes, REPLY_WAIT)

            for i in range(100):  # replies of 1 MB, until the sockets hold no more and asyncio buffers them
                await reply_big(f"b{i}")
                if connection.get_write_buffer_size():
                    break
            assert connection.get_write_buffer_size()
            await peer.publish("user.updated", orjson.dumps({"pattern": "user.updated", "data": "gone"}))
            await wait_for(lambda: transport.nc.is_reconnecting, REPLY_WAIT)  # the relay's EOF reached it
            if queued:
                seen["release"].set()  # its reply waits for a connection, in nats-py's pending buffer
                await wait_for(lambda: transport.stats.in_flight == 0, REPLY_WAIT)
            async with asyncio.timeout(10):
                await transport.shutdown(1.0)
            assert transport.stats.state == "closed" and transport.nc.is_closed
            await asyncio.sleep(0)  # what was cancelled last has run its end
            assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()
    finally:
        await peer.close()


async def test_nats_down_at_start_then_up_then_restarted(
    nats_server_factory: Callable[..., NatsServer], make_transport: Any
) -> None:
    server = nats_server_factory()
    server.stop()
    transport = await make_transport(server.url, wait=False)
    await asyncio.sleep(0.5)
    assert transport.stats.state == "connecting"
    server.start()
    await transport.wait_ready(15)
    assert transport.stats.state == "connected"
    server.stop()
    async with asyncio.timeout(10):
        while transport.stats.state == "connected":
            await asyncio.sleep(0.05)
    assert transport.stats.state == "reconnecting"
    server.start()
    async with asyncio.timeout(15):
        while transport.stats.state != "connected":
            await asyncio.sleep(0.05)
    nc = await nats.connect(server.url)
    try:
        [reply] = await raw_request(nc, "echo", request("echo", "back"))
    finally:
        await nc.close()
    assert reply.data == b'{"response":"back","isDisposed":true,"id":"r1"}'
    assert (transport.stats.connects, transport.stats.disconnects) == (2, 1)


async def test_nats_credentials_of_their_own_or_in_the_url(
    nats_server_factory: Callable[..., NatsServer], make_transport: Any
) -> None:
    with_user = nats_server_factory(user="svc", password="pw")
    with_token = nats_server_factory(token="tok")
    refused = await make_transport(with_user.url, wait=False, credentials={"user": "svc", "password": "nope"})
    with pytest.raises(NatsRefused, match="refused the credentials"):
        await refused.check_credentials()
    user = {"user": "svc", "password": "pw"}
    for url, credentials, peer_login in [
        (with_user.url, user, user),
        (with_user.url.replace("nats://", "nats://svc:pw@"), {}, user),
        (with_token.url, {"token": "tok"}, {"token": "tok"}),
    ]:
        transport = await make_transport(url, wait=False, credentials=credentials)
        await transport.check_credentials()
        await transport.wait_ready(REPLY_WAIT)
        nc = await nats.connect(url.replace("svc:pw@", ""), **peer_login)
        try:
            [reply] = await raw_request(nc, "echo", request("echo", "in"))
        finally:
            await nc.close()
        assert reply.data == b'{"response":"in","isDisposed":true,"id":"r1"}'
    # a server down is no refusal: the transport keeps connecting in the background
    with_user.stop()
    await (await make_transport(with_user.url, wait=False)).check_credentials(timeout=3)


async def test_the_documented_permissions_keep_forged_events_and_strangers_out(
    nats_server_factory: Callable[..., NatsServer],
    make_transport: Any,
    seen: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BOOKING", "GATEWAY", "PAYMENTS"):
        monkeypatch.setenv(f"{name}_NATS_PASSWORD", f"{name.lower()}-pw")
    broker = nats_server_factory(config=DOCS / "nats-permissions.conf")
    transport = await make_transport(broker.url, credentials={"user": "booking", "password": "booking-pw"})
    await transport.check_credentials()
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    gateway = await nats.connect(broker.url, user="gateway", password="gateway-pw", error_cb=on_error)
    payments = await nats.connect(broker.url, user="payments", password="payments-pw", error_cb=on_error)
    try:
        [reply] = await raw_request(gateway, "echo", request("echo", "via the gateway"))
        assert reply.data == b'{"response":"via the gateway","isDisposed":true,"id":"r1"}'
        # the gateway may not say a user changed: the broker refuses the publish, the event never arrives
        await gateway.publish("user.updated", orjson.dumps({"pattern": "user.updated", "data": {"id": "forged"}}))
        await gateway.flush()
        await wait_for(lambda: any("permissions violation" in str(e).lower() for e in errors), REPLY_WAIT)
        # the payment service may publish what it owns, and nothing else
        await payments.publish("echo", request("echo", "not yours"), reply=payments.new_inbox())
        await payments.flush()
        await wait_for(lambda: sum("permissions violation" in str(e).lower() for e in errors) >= 2, REPLY_WAIT)
    finally:
        await gateway.close()
        await payments.close()
    assert "events" not in seen
    assert transport.stats.events_total == 0 and transport.stats.requests_total == 1


def test_logged_urls_keep_no_secret() -> None:
    assert shown_url("nats://svc:pw@n1:4222") == "nats://svc:***@n1:4222"
    assert shown_url("nats://s3cret-token@n1:4222") == "nats://***@n1:4222"
    assert shown_url("nats://n1:4222") == "nats://n1:4222"


async def test_shutdown_drains_in_flight_then_stops_taking_requests(
    make_transport: Any, peer: NatsClient, seen: dict[str, Any]
) -> None:
    transport = await make_transport()
    inbox = peer.new_inbox()
    sub = await peer.subscribe(inbox)
    await peer.publish("slow", request("slow", None, "d1"), reply=inbox)
    async with asyncio.timeout(REPLY_WAIT):
        while transport.stats.in_flight == 0:
            await asyncio.sleep(0.01)
    stopping = asyncio.create_task(transport.shutdown(5.0))
    await asyncio.sleep(0.2)
    assert not stopping.done()
    seen["release"].set()
    assert orjson.loads((await sub.next_msg(timeout=REPLY_WAIT)).data) == {
        "response": "done",
        "isDisposed": True,
        "id": "d1",
    }
    await stopping
    assert transport.stats.state == "closed"
    # nobody subscribes any more: a NATS server answers a request with "no responders"
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    with pytest.raises(nats.errors.NoRespondersError):
        await peer.request("slow", request("slow", None), timeout=2)
