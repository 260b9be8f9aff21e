"""Tracing: the caller's trace context in, a span per message and per named statement, the trace in the events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode

from booking_rpc.client import Client, RemoteError
from booking_rpc.config import Settings
from booking_rpc.context import Context
from booking_rpc.db.pool import ServiceConnection
from booking_rpc.events.relay import OutboxRelay
from booking_rpc.handlers.system import router as system_router
from booking_rpc.jobs.runner import JobRunner
from booking_rpc.router import Call, Router
from booking_rpc.server.nats import NatsTransport
from booking_rpc.tracing import TracingConfig, connection_class, instrument
from tests.fixtures.tracing import DATA_FIELD, Traced, in_memory_tracing
from tests.helpers import expire_now, make_service, make_slot, user_actor

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def hold_body(service_id: uuid.UUID, slot_id: uuid.UUID) -> dict[str, Any]:
    user = uuid.uuid4()
    return {
        "actor": user_actor(user),
        "user_id": str(user),
        "pet_id": str(uuid.uuid4()),
        "service_id": str(service_id),
        "slot_id": str(slot_id),
    }


async def traced_client(traced: Traced, metadata: dict[str, str] | None) -> Client:
    client = await Client.connect("127.0.0.1", traced.server.port)
    client.set_on_dispatch_hook(lambda: metadata)
    return client


# --- configuration -------------------------------------------------------------------------------------


def test_off_unless_otel_variables_ask_for_it() -> None:
    assert not TracingConfig.from_env({}).enabled
    assert not TracingConfig.from_env({"OTEL_SERVICE_NAME": "booking"}).enabled
    assert TracingConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}).exporters == ("otlp",)
    assert TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "console"}).enabled
    assert not TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not TracingConfig.from_env(disabled).enabled
    grpc = TracingConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc.protocol == "grpc"


def test_describe_masks_exporter_headers() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret"}
    lines = TracingConfig.from_env(env).describe(env)
    assert lines[0].startswith("# tracing: on")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318  # env" in lines
    assert "OTEL_SERVICE_NAME=booking-rpc  # default" in lines
    assert not any("s3cret" in line for line in lines)


def test_off_installs_no_middleware(app_ctx: Context) -> None:
    router = Router()
    router.include(system_router)
    instrument(router, app_ctx.settings, None)
    assert router.middleware == []
    assert connection_class(None, app_ctx.sql) is ServiceConnection  # the pool's own, untraced


async def test_off_with_a_data_field_only_removes_it(app_ctx: Context) -> None:
    settings = app_ctx.settings.model_copy(update={"trace_data_field": DATA_FIELD})
    router = Router()

    @router.message("strict")
    async def strict(payload: Settings, ctx: Any) -> int:  # a model refusing unknown fields
        return payload.port

    instrument(router, settings, None)
    route = router.lookup("strict")
    assert route is not None
    assert len(router.middleware) == 1
    assert await route.invoke({"port": 7, DATA_FIELD: {"traceparent": TRACEPARENT}}, app_ctx, Call("tcp")) == 7


# --- requests ------------------------------------------------------------------------------------------


async def test_request_span_continues_the_callers_trace_with_a_span_per_statement(traced: Traced) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    client = await traced_client(traced, {"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    try:
        held = await client.send("booking.reservation.create", hold_body(cat.service_id, slot))
    finally:
        await client.close()
    server = traced.one("booking.reservation.create")
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.context.trace_state.get("vendor") == "1"
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "nestjs"
    assert server.attributes["rpc.method"] == "booking.reservation.create"
    assert server.attributes["booking.rpc.outcome"] == "ok"
    statements = traced.children(server)
    names = [s.name for s in statements]
    assert "reservations.hold" in names, names
    assert all(name in traced.ctx.sql for name in names)  # statement names, never SQL text
    assert all(s.kind is SpanKind.CLIENT and s.context.trace_id == server.context.trace_id for s in statements)
    assert all(s.attributes is not None and s.attributes["db.system.name"] == "postgresql" for s in statements)
    # the event the hold statement wrote carries this request's trace (and the server span as parent)
    async with traced.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT trace_context FROM booking_events_outbox WHERE event_type = 'reservation.created' "
            "AND aggregate_id = $1",
            uuid.UUID(held["id"]),
        )
    assert stored["traceparent"] == f"00-{TRACE_ID}-{format(server.context.span_id, '016x')}-01"
    assert stored["tracestate"] == "vendor=1"


async def test_no_metadata_starts_a_new_trace_and_writes_it_into_the_events(traced: Traced) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    client = await traced_client(traced, None)
    try:
        await client.send("booking.reservation.create", hold_body(cat.service_id, slot))
        await client.send("ping", {})
    finally:
        await client.close()
    server = traced.one("booking.reservation.create")
    assert server.parent is None
    ping = traced.one("ping")
    assert ping.parent is None and ping.context.trace_id != server.context.trace_id
    async with traced.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT trace_context FROM booking_events_outbox")
    assert stored["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")


async def test_failure_records_the_error_code_on_the_span(traced: Traced) -> None:
    client = await traced_client(traced, {"TraceParent": TRACEPARENT})  # header names ignore case
    try:
        with pytest.raises(RemoteError) as failed:
            await client.send("booking.reservation.create", hold_body(uuid.uuid4(), uuid.uuid4()))
        with pytest.raises(RemoteError):
            await client.send("booking.reservation.create", {"unknown": 1})
    finally:
        await client.close()
    code = failed.value.err["code"]
    first, invalid = traced.named("booking.reservation.create")
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["booking.rpc.outcome"] == "error"
    assert first.attributes["booking.rpc.error_code"] == code
    assert [e.name for e in first.events] == ["exception"]
    assert invalid.attributes is not None and invalid.attributes["booking.rpc.error_code"] == "VALIDATION_FAILED"


async def test_data_field_of_older_gateways_is_read_and_removed_before_validation(traced: Traced) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    client = await traced_client(traced, None)
    try:
        body = {**hold_body(cat.service_id, slot), DATA_FIELD: {"traceparent": TRACEPARENT}}
        held = await client.send("booking.reservation.create", body)  # the strict model never saw the field
    finally:
        await client.close()
    assert held["status"] == "pending"
    server = traced.one("booking.reservation.create")
    assert format(server.context.trace_id, "032x") == TRACE_ID


async def test_log_lines_carry_the_trace_while_a_request_runs(traced: Traced) -> None:
    seen: list[dict[str, Any]] = []

    @traced.router.message("test.log_context")
    async def log_context(payload: Any, ctx: Any) -> None:
        seen.append(structlog.contextvars.get_contextvars())

    client = await traced_client(traced, {"traceparent": TRACEPARENT})
    try:
        await client.send("test.log_context", {})
    finally:
        await client.close()
    span = traced.one("test.log_context")
    assert seen == [{"trace_id": TRACE_ID, "span_id": format(span.context.span_id, "016x")}]
    assert "trace_id" not in structlog.contextvars.get_contextvars()


async def test_a_streamed_reply_is_one_span_that_ends_after_the_last_item(traced: Traced) -> None:
    go_on = asyncio.Event()

    @traced.router.message("test.stream")
    async def stream(payload: Any, ctx: Context) -> AsyncIterator[int]:
        for i in range(3):
            async with ctx.connection() as conn:  # a statement while the reply streams: a child span
                await conn.fetchrow(ctx.sql["services.get"], uuid.uuid4())
            yield i
            await go_on.wait()

    client = await traced_client(traced, {"traceparent": TRACEPARENT})
    try:
        items = client.stream("test.stream", {})
        assert await anext(items) == 0
        assert traced.named("test.stream") == []  # still streaming: the span has not ended
        go_on.set()
        assert [item async for item in items] == [1, 2]
    finally:
        await client.close()
    async with asyncio.timeout(5):
        while not traced.named("test.stream"):
            await asyncio.sleep(0.01)
    span = traced.one("test.stream")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.attributes is not None and span.attributes["booking.rpc.outcome"] == "ok"
    statements = traced.children(span)
    assert [s.name for s in statements] == ["services.get"] * 3
    assert span.end_time is not None
    assert all(s.end_time is not None and s.end_time <= span.end_time for s in statements)


async def test_an_unsampled_request_makes_no_statement_spans_and_passes_its_trace_on(traced: Traced) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    client = await traced_client(traced, {"traceparent": unsampled})
    try:
        held = await client.send("booking.reservation.create", hold_body(cat.service_id, slot))
    finally:
        await client.close()
    assert traced.spans() == []  # the caller did not sample it (parent-based sampler): nothing recorded
    async with traced.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT trace_context FROM booking_events_outbox WHERE aggregate_id = $1", uuid.UUID(held["id"])
        )
    assert stored["traceparent"].startswith(f"00-{TRACE_ID}-") and stored["traceparent"].endswith("-00")


async def test_the_hold_takes_its_trace_as_a_parameter_not_a_session_setting(traced: Traced) -> None:
    """reservations.hold gets the trace context as $11 from the traced connection (no set_config round
    trip first): the session's setting stays as it was; a stale one is never used for a hold with no trace,
    and a value the caller passes is kept."""
    cat = await make_service(traced.ctx)
    slots = [await make_slot(traced.pool, cat.service_id, capacity=3)] * 3
    hold = traced.ctx.sql["reservations.hold"]

    async def held(conn: asyncpg.Connection, slot: uuid.UUID, trace_context: str | None) -> Any:
        row = await conn.fetchrow(
            hold, uuid.uuid4(), uuid.uuid4(), cat.service_id, slot, "lock", 60, None, None, 5, 5, trace_context
        )
        assert row is not None
        return await conn.fetchval("SELECT trace_context FROM booking_events_outbox WHERE aggregate_id = $1", row["id"])

    stale = '{"traceparent": "00-' + "1" * 32 + "-" + "2" * 16 + '-01"}'
    async with traced.pool.acquire() as conn:
        await conn.execute("SELECT set_config('booking.trace_context', $1, false)", stale)
        with traced.tracing.tracer.start_as_current_span("caller") as caller:
            stored = await held(conn, slots[0], None)
        span = caller.get_span_context()
        assert stored["traceparent"] == f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
        assert traced.one("reservations.hold").parent == span
        assert await conn.fetchval("SELECT current_setting('booking.trace_context', true)") == stale
        assert await held(conn, slots[1], None) is None  # no trace: none, not the session's stale one
        given = '{"traceparent": "00-' + "3" * 32 + "-" + "4" * 16 + '-00"}'
        assert await held(conn, slots[2], given) == orjson.loads(given)


async def test_outgoing_calls_carry_the_current_trace(traced: Traced) -> None:
    client = await Client.connect("127.0.0.1", traced.server.port)  # the default dispatch hook
    try:
        with traced.tracing.tracer.start_as_current_span("caller") as caller:
            await client.send("ping", {})
        await client.send("echo", {})  # no span current: no metadata, a new trace
    finally:
        await client.close()
    ping, echo = traced.one("ping"), traced.one("echo")
    assert ping.parent is not None and ping.parent.span_id == caller.get_span_context().span_id
    assert ping.context.trace_id == caller.get_span_context().trace_id
    assert echo.parent is None


async def test_events_get_a_consumer_span(traced: Traced) -> None:
    client = await traced_client(traced, {"traceparent": TRACEPARENT})
    try:
        body = {"id": str(uuid.uuid4()), "name": "Rex", "updated_at": "2026-12-01T10:00:00Z"}
        await client.emit("pet.updated", body)
        async with asyncio.timeout(5):
            while not traced.named("pet.updated"):
                await asyncio.sleep(0.02)
    finally:
        await client.close()
    span = traced.one("pet.updated")
    assert span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID


# --- malformed carriers ---------------------------------------------------------------------------------

VALID = st.builds(
    lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}",
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.integers(0, 255),
)
MUTATED = st.builds(
    lambda v, i, c: v[:i] + c + v[i + 1 :], VALID, st.integers(0, 54), st.sampled_from(list("-0fgZ \x00é"))
)
JUNK = st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    traceparent=st.one_of(VALID, MUTATED, JUNK),
    tracestate=JUNK,
    baggage=JUNK,
    key=st.sampled_from(["traceparent", "TRACEPARENT", "trace-parent"]),
)
def test_a_malformed_carrier_is_ignored_never_an_error(
    traceparent: Any, tracestate: Any, baggage: Any, key: str
) -> None:
    tracing, exporter = in_memory_tracing()
    router = Router()
    router.include(system_router)
    tracing.install(router)
    route = router.lookup("echo")
    assert route is not None
    metadata = {key: traceparent, "tracestate": tracestate, "baggage": baggage}
    data = {"n": 1, DATA_FIELD: metadata}
    call = Call("tcp", metadata)
    assert asyncio.run(route.invoke(data, None, call)) == {"n": 1}
    spans = exporter.get_finished_spans()
    if not spans:  # a well-formed parent that was not sampled: continued, not recorded (parentbased sampler)
        assert isinstance(traceparent, str) and int(traceparent.strip().split("-")[3][:2], 16) & 1 == 0
        return
    (span,) = spans
    if span.parent is not None:  # only a well-formed traceparent is continued (from metadata or the field)
        assert isinstance(traceparent, str) and traceparent.strip().split("-")[1] == f"{span.context.trace_id:032x}"


# --- jobs -------------------------------------------------------------------------------------------------


async def test_a_job_run_is_a_trace_its_expired_holds_events_carry(traced: Traced) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    client = await traced_client(traced, {"traceparent": TRACEPARENT})
    try:
        held = await client.send("booking.reservation.create", hold_body(cat.service_id, slot))
    finally:
        await client.close()
    await expire_now(traced.pool, uuid.UUID(held["id"]))
    assert await JobRunner(traced.ctx).run_job("expire_holds") == 1
    job = traced.one("job expire_holds")
    assert job.parent is None and job.attributes is not None and job.attributes["booking.job.items"] == 1
    assert "reservations.expire_batch" in [s.name for s in traced.children(job)]
    async with traced.pool.acquire() as conn:
        rows = dict(await conn.fetch("SELECT event_type, trace_context FROM booking_events_outbox"))
    assert rows["reservation.created"]["traceparent"].split("-")[1] == TRACE_ID
    assert rows["reservation.expired"]["traceparent"].split("-")[1:3] == [
        format(job.context.trace_id, "032x"),
        format(job.context.span_id, "016x"),
    ]


# --- NATS ---------------------------------------------------------------------------------------------------


async def test_nats_headers_carry_the_trace(traced: Traced, nats_url: str) -> None:
    transport = NatsTransport(traced.router, traced.ctx, servers=[nats_url], queue=f"tracing-{uuid.uuid4().hex}")
    await transport.start()
    peer = await nats.connect(nats_url)
    try:
        await transport.wait_ready()
        inbox = peer.new_inbox()
        replies = await peer.subscribe(inbox, max_msgs=1)
        body = orjson.dumps({"pattern": "ping", "data": {}, "id": "r1"})
        await peer.publish("ping", body, reply=inbox, headers={"Traceparent": TRACEPARENT})
        reply = await replies.next_msg(timeout=5)
    finally:
        await peer.close()
        await transport.shutdown(1.0)
    assert orjson.loads(reply.data)["response"] == "pong"
    span = traced.one("ping")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes is not None and span.attributes["network.transport"] == "nats"


async def test_jetstream_events_carry_the_writers_trace_in_headers(
    traced: Traced, nats_url: str, jetstream_stream: str
) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    client = await traced_client(traced, {"traceparent": TRACEPARENT})
    try:
        await client.send("booking.reservation.create", hold_body(cat.service_id, slot))
    finally:
        await client.close()
    server = traced.one("booking.reservation.create")
    settings = Settings(nats_url=nats_url, events_nats=True, nats_stream=jetstream_stream)
    ctx = Context(traced.pool, traced.ctx.sql, settings, extras={"tracing": traced.tracing})
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        async with asyncio.timeout(15):
            while await traced.pool.fetchval("SELECT count(*) FROM booking_events_outbox WHERE NOT published"):
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    peer = await nats.connect(nats_url)
    try:
        message = await peer.jetstream().get_msg(jetstream_stream, 1)
    finally:
        await peer.close()
    assert message.subject == "reservation.created"
    assert message.headers is not None
    assert message.headers["traceparent"] == f"00-{TRACE_ID}-{format(server.context.span_id, '016x')}-01"
