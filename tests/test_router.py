"""The router's middleware chain, the Call a transport hands it (in process and over a real socket), and
its error-mapper table."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, model_validator

from booking_rpc.app import build_context, service_router
from booking_rpc.config import Settings
from booking_rpc.db.pool import create_pool
from booking_rpc.errors import RpcError
from booking_rpc.handlers import build_router
from booking_rpc.router import Call, Next, Route, Router
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame
from booking_rpc.wire.messages import request_message
from tests.fixtures.server import MakeServer


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def strict_router() -> Router:
    router = Router()

    @router.message("greet")
    async def greet(payload: Strict, ctx: Any) -> str:
        return f"hello {payload.name}"

    return router


async def test_without_middleware_a_route_runs_as_before() -> None:
    router = strict_router()
    assert await router.routes["greet"].invoke({"name": "a"}, None) == "hello a"


async def test_middleware_runs_outermost_first_and_may_hand_on_other_data() -> None:
    router = strict_router()
    seen: list[str] = []

    async def outer(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        seen.append(f"outer {route.route} {call.transport}")
        return await call_next(data)

    async def strip_token(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        seen.append(f"inner {data.get('token')}")
        call.attrs["token"] = data["token"]
        return await call_next({k: v for k, v in data.items() if k != "token"})

    router.use(outer)
    router.use(strip_token)
    call = Call("tcp")
    # the strict model would refuse `token`: the inner middleware removed it before validation
    assert await router.routes["greet"].invoke({"name": "a", "token": "t"}, None, call) == "hello a"
    assert seen == ["outer greet tcp", "inner t"]
    assert call.attrs == {"token": "t"}


async def test_middleware_added_to_the_app_router_covers_included_routes() -> None:
    app = Router()
    app.include(strict_router())
    refused = RpcError("FORBIDDEN", "no")

    async def refuse(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        raise refused

    app.use(refuse)
    route = app.routes["greet"]
    try:
        await route.invoke({"name": "a"}, None)
    except RpcError as err:
        assert err is refused
    else:
        raise AssertionError("the middleware's refusal did not reach the caller")
    assert route.stats.outcomes["FORBIDDEN"] == 1


def test_header_lookup_ignores_case() -> None:
    call = Call("nats", {"Traceparent": "00-x", "authorization": "Bearer t"})
    assert call.header("traceparent") == "00-x"
    assert call.header("Authorization") == "Bearer t"
    assert call.header("missing") is None
    assert Call("tcp").header("traceparent") is None


async def test_tcp_hands_the_packet_metadata_to_middleware(make_server: MakeServer) -> None:
    router = strict_router()
    calls: list[Call] = []

    async def record(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        calls.append(call)
        return await call_next(data)

    router.use(record)
    server = await make_server(router)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    message = request_message("greet", {"name": "b"}, "1", metadata={"traceparent": "00-abc"})
    writer.write(encode_frame(message))
    await writer.drain()
    decoder = JsonFrameDecoder()
    replies: list[Any] = []
    while not replies:
        replies = decoder.feed(await asyncio.wait_for(reader.read(65536), 2.0))
    writer.close()
    assert replies == [{"response": "hello b", "isDisposed": True, "id": "1"}]
    assert [(c.transport, dict(c.metadata or {})) for c in calls] == [("tcp", {"traceparent": "00-abc"})]


class Lost(ConnectionError):
    pass


def failing_router(exc: BaseException) -> Router:
    router = Router()

    @router.message("fail")
    async def fail(payload: Any, ctx: Any) -> None:
        raise exc

    return router


async def invoke_error(router: Router, route: str, data: Any = None) -> RpcError:
    try:
        await router.routes[route].invoke(data, None)
    except RpcError as err:
        return err
    raise AssertionError("the route did not fail")


async def test_error_mappers_answer_by_the_nearest_registered_class() -> None:
    app = Router()
    app.include(failing_router(Lost("gone")))
    # registered after the route was included: the table is shared, as middleware is
    app.map_error(OSError, lambda exc, route: RpcError("CONFLICT", f"os {route}"))
    assert (await invoke_error(app, "fail")).to_wire()["message"] == "os fail"
    app.map_error(ConnectionError, lambda exc, route: RpcError("SERVICE_UNAVAILABLE", repr(exc)))
    err = await invoke_error(app, "fail")
    assert (err.code, err.status_code, err.message) == ("SERVICE_UNAVAILABLE", 503, "Lost('gone')")
    assert app.routes["fail"].stats.outcomes == Counter({"CONFLICT": 1, "SERVICE_UNAVAILABLE": 1})


async def test_a_mapper_that_declines_leaves_the_error_to_the_next_class_then_internal() -> None:
    app = failing_router(Lost("gone"))
    app.map_error(ConnectionError, lambda exc, route: None)
    assert (await invoke_error(app, "fail")).code == "INTERNAL"
    app.map_error(OSError, lambda exc, route: RpcError("BAD_REQUEST", "os"))
    assert (await invoke_error(app, "fail")).code == "BAD_REQUEST"


async def test_validation_failures_are_mapped_without_registration() -> None:
    err = await invoke_error(strict_router(), "greet", {"name": 1})
    assert err.code == "VALIDATION_FAILED"
    assert err.details == [{"field": "name", "message": "Input should be a valid string", "type": "string_type"}]


@pytest.mark.parametrize("payload", [[], "x", 5, True])
async def test_a_payload_that_is_no_object_is_named_as_the_payload(payload: Any) -> None:
    err = await invoke_error(service_router(), "booking.slots.find", payload)
    assert err.details == [{"field": "(payload)", "message": "The payload must be a JSON object", "type": "model_type"}]


class Window(BaseModel):
    start: int
    end: int

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start > self.end:
            raise ValueError("start is after end")
        return self


async def test_a_check_across_fields_says_its_own_message_about_the_payload() -> None:
    router = Router()

    @router.message("window")
    async def window(payload: Window, ctx: Any) -> None:
        return None

    err = await invoke_error(router, "window", {"start": 2, "end": 1})
    assert err.details == [{"field": "(payload)", "message": "start is after end", "type": "value_error"}]


async def test_validation_messages_name_no_internal_class() -> None:
    err = await invoke_error(service_router(), "booking.services.upsert", {"actor": "admin"})
    assert err.details is not None
    assert {"field": "actor", "message": "Input should be a JSON object", "type": "model_type"} in err.details
    for detail in err.details:
        assert "instance of" not in detail["message"] and "Request" not in detail["message"], detail


async def test_the_service_router_answers_a_lost_database_with_service_unavailable(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1)
    await pool.close()  # every acquire now fails: "pool is closing"
    ctx = build_context(Settings(port=0, metrics_enabled=False, jobs_enabled=False), pool)
    route = service_router().routes["booking.services.find"]
    try:
        await route.invoke({"clinic_id": str(uuid.uuid4())}, ctx)
    except RpcError as err:
        assert err.to_wire() == {
            "status": "error",
            "statusCode": 503,
            "code": "SERVICE_UNAVAILABLE",
            "message": "The database is unavailable, try again later",
        }
    else:
        raise AssertionError("a closed pool answered")
    # the bare handlers' router knows no database: the same failure is INTERNAL there
    with pytest.raises(RpcError) as internal:
        await build_router().routes["booking.services.find"].invoke({"clinic_id": str(uuid.uuid4())}, ctx)
    assert internal.value.code == "INTERNAL"
