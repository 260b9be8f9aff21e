"""One trace from a genuine NestJS 12 gateway through booking-rpc and its SQL to a genuine NestJS subscriber."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from booking_rpc.events.relay import OutboxRelay
from booking_rpc.events.subscribers import Subscriber
from tests.fixtures.interop import nest_client, nest_server
from tests.fixtures.tracing import Traced
from tests.helpers import make_service, make_slot, user_actor

pytestmark = pytest.mark.interop

HOLD_TRACE, HOLD_PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CONFIRM_TRACE, CONFIRM_PARENT = "a3ce929d0e0e47364bf92f3577b34da6", "53995c3f42cd8ad8"


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


async def test_nest_gateway_trace_reaches_the_service_its_sql_and_a_nest_subscriber(
    harness: Path, traced: Traced
) -> None:
    cat = await make_service(traced.ctx)
    slot = await make_slot(traced.pool, cat.service_id)
    user = uuid.uuid4()
    hold: dict[str, Any] = {
        "actor": user_actor(user),
        "user_id": str(user),
        "pet_id": str(uuid.uuid4()),
        "service_id": str(cat.service_id),
        "slot_id": str(slot),
    }
    # the gateway: a NestJS 12.1.1 ClientProxy whose onDispatchHook sets packet.metadata.traceparent
    port = traced.server.port
    tp = traceparent(HOLD_TRACE, HOLD_PARENT)
    (held,) = await nest_client(
        harness,
        port,
        [{"op": "send", "pattern": "booking.reservation.create", "data": hold, "metadata": {"traceparent": tp}}],
    )
    reservation = held["ok"]
    confirm = {
        "actor": user_actor(user),
        "reservation_id": reservation["id"],
        "lock_id": reservation["lock_id"],
        "user_id": str(user),
        "payment": {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"},
    }
    tp = traceparent(CONFIRM_TRACE, CONFIRM_PARENT)
    (confirmed,) = await nest_client(
        harness,
        port,
        [{"op": "send", "pattern": "booking.reservation.confirm", "data": confirm, "metadata": {"traceparent": tp}}],
    )
    assert confirmed["ok"]["status"] == "confirmed", confirmed

    # the service's spans continue the gateway's traces, with a child span per SQL statement
    create_span = traced.one("booking.reservation.create")
    confirm_span = traced.one("booking.reservation.confirm")
    for span, (trace_id, parent_id) in (
        (create_span, (HOLD_TRACE, HOLD_PARENT)),
        (confirm_span, (CONFIRM_TRACE, CONFIRM_PARENT)),
    ):
        assert span.kind is SpanKind.SERVER
        assert format(span.context.trace_id, "032x") == trace_id
        assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert "reservations.hold" in [s.name for s in traced.children(create_span)]
    confirm_sql = [s.name for s in traced.children(confirm_span)]
    assert confirm_sql and all(name in traced.ctx.sql for name in confirm_sql), confirm_sql

    # the relay delivers to a NestJS 12.1.1 subscriber; TcpContext.getMetadata() has the writer's trace
    async with nest_server(harness, events=["reservation.created", "booking.created", "booking.confirmed"]) as nest:
        relay = OutboxRelay(traced.ctx, [Subscriber("nest", "127.0.0.1", nest.port, ("reservation.*", "booking.*"))])
        try:
            delivered = await relay.run_once()
            received = await nest.wait_for_events(delivered)
        finally:
            await relay.stop()
    by_pattern = {e["pattern"]: e for e in received}
    assert {"reservation.created", "booking.created", "booking.confirmed"} <= set(by_pattern)
    expected_hold = traceparent(HOLD_TRACE, format(create_span.context.span_id, "016x"))
    expected_confirm = traceparent(CONFIRM_TRACE, format(confirm_span.context.span_id, "016x"))
    assert by_pattern["reservation.created"]["metadata"] == {"traceparent": expected_hold}
    assert by_pattern["booking.confirmed"]["metadata"] == {"traceparent": expected_confirm}
    assert by_pattern["booking.created"]["metadata"] == {"traceparent": expected_confirm}  # written by the trigger

    # the delivery is a span of its own, linked to the traces of the requests that wrote its events
    deliver = traced.named("outbox.deliver")
    assert deliver and all(d.kind is SpanKind.PRODUCER for d in deliver)
    linked = {format(link.context.trace_id, "032x") for d in deliver for link in d.links}
    assert {HOLD_TRACE, CONFIRM_TRACE} <= linked
    assert "outbox.mark_delivered" in [s.name for d in deliver for s in traced.children(d)]
