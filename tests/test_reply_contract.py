"""Every request pattern of the service answers its published reply shape (schemas/patterns/<p>.reply.json).

One scenario calls every message route of the real service router once with a valid request and checks
each reply against the published schema, closed to extra properties. The set of patterns called must be
the router's set, so a pattern added without a case here fails this test instead of going unchecked.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from booking_rpc import jsonutil
from booking_rpc.app import service_router
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.schemas import DEFAULT_DIR
from tests.helpers import (
    admin,
    assert_reply_published,
    book,
    call,
    confirm_body,
    hold,
    make_service,
    make_slot,
    set_status,
    shift_slot,
    staff,
    user_actor,
)

# A reply schema that names no shape would accept anything; echo alone answers any JSON value by design.
ANY_VALUE_REPLIES = {"echo"}


def request_patterns() -> set[str]:
    return {p for p, route in service_router().routes.items() if route.kind == "message"}


def test_every_reply_schema_names_a_shape() -> None:
    for pattern in sorted(request_patterns() - ANY_VALUE_REPLIES):
        schema = json.loads((DEFAULT_DIR / "patterns" / f"{pattern}.reply.json").read_text(encoding="utf-8"))
        assert {"type", "$ref", "anyOf", "oneOf", "const", "enum"} & set(schema), f"{pattern}: {schema}"
        if schema.get("type") == "object":
            assert schema.get("properties"), f"{pattern}: an object reply with no properties"


async def test_every_pattern_answers_its_published_shape(app_ctx: Context, pool: Pool) -> None:
    replies: dict[str, Any] = {}

    async def check(pattern: str, data: Any) -> Any:
        route = service_router().lookup(pattern)
        assert route is not None and route.kind == "message" and not route.streaming, pattern
        reply = await call(app_ctx, pattern, data)
        assert_reply_published(pattern, reply)  # `call` checks too; this test does not rely on it
        replies.setdefault(pattern, jsonutil.loads(jsonutil.dumps(reply)))
        return reply

    await check("ping", None)
    await check("echo", {"any": ["thing"]})

    clinic = uuid.uuid4()
    service = await check(
        "booking.services.upsert",
        {"actor": staff(clinic), "clinic_id": str(clinic), "name": "Checkup", "price": "100.00"},
    )
    await check("booking.services.find", {"clinic_id": str(clinic)})
    day = dt.date.today() + dt.timedelta(days=7)
    window = {"date_from": day.isoformat(), "date_to": day.isoformat()}
    await check(
        "booking.slots.generate",
        {
            "actor": staff(clinic),
            "service_id": str(service.id),
            **window,
            "windows": [{"start": "09:00", "end": "10:00"}],
        },
    )
    await check("booking.slots.find", {"service_id": str(service.id), **window})
    slot_id = replies["booking.slots.find"]["items"][0]["id"]
    await check("booking.slots.block", {"actor": staff(clinic), "slot_id": str(slot_id)})
    await check("booking.slots.unblock", {"actor": staff(clinic), "slot_id": str(slot_id)})
    await check("booking.availability.check", {"service_id": str(service.id), "slot_id": str(slot_id)})

    cat = await make_service(app_ctx, clinic_id=clinic)
    user = uuid.uuid4()
    slot = await make_slot(pool, cat.service_id, capacity=3)
    held = await check(
        "booking.reservation.create",
        {
            "actor": user_actor(user),
            "user_id": str(user),
            "pet_id": str(uuid.uuid4()),
            "service_id": str(cat.service_id),
            "slot_id": str(slot),
        },
    )
    await check(
        "booking.reservation.cancel",
        {"actor": user_actor(user), "reservation_id": str(held.id), "lock_id": held.lock_id},
    )
    held = await hold(app_ctx, cat, slot, user)
    pay = {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"}
    booking = await check("booking.reservation.confirm", confirm_body(held, payment=pay))
    me = user_actor(user)
    await check("booking.booking.get", {"actor": me, "booking_id": str(booking.id)})
    await check("booking.booking.find", {"actor": me, "include_total": True})
    await check("booking.payments.find", {"actor": staff(clinic)})
    await check(
        "booking.attachments.add",
        {"actor": me, "booking_id": str(booking.id), "file_name": "x.png", "file_url": "https://files/x.png"},
    )
    await check("booking.attachments.find", {"actor": me, "booking_id": str(booking.id)})
    await check("booking.booking.cancel", {"actor": me, "booking_id": str(booking.id), "reason": "moved away"})
    notes = await check("booking.notifications.find", {"actor": me})
    await check("booking.notifications.mark_read", {"actor": me, "ids": [str(notes.items[0].id)]})

    pending = await book(app_ctx, pool, cat=await make_service(app_ctx, clinic_id=clinic, requires_approval=True))
    await check("booking.booking.approve", {"actor": staff(clinic), "booking_id": str(pending.booking.id)})
    rejected = await book(app_ctx, pool, cat=await make_service(app_ctx, clinic_id=clinic, requires_approval=True))
    await check(
        "booking.booking.reject",
        {"actor": staff(clinic), "booking_id": str(rejected.booking.id), "reason": "no vet that day"},
    )
    moving = await book(app_ctx, pool, cat=await make_service(app_ctx, clinic_id=clinic))
    later = await make_slot(pool, moving.cat.service_id, starts_in=dt.timedelta(days=4))
    await check(
        "booking.booking.reschedule",
        {"actor": user_actor(moving.user), "booking_id": str(moving.booking.id), "slot_id": str(later)},
    )
    waiter = uuid.uuid4()
    waiting = await check(  # `later` is full now: the waiter waits
        "booking.waitlist.join",
        {
            "actor": user_actor(waiter),
            "user_id": str(waiter),
            "pet_id": str(uuid.uuid4()),
            "service_id": str(moving.cat.service_id),
            "slot_id": str(later),
        },
    )
    await check("booking.waitlist.find", {"actor": user_actor(waiter)})
    await check("booking.waitlist.leave", {"actor": user_actor(waiter), "entry_id": str(waiting.id)})

    done = await book(app_ctx, pool, cat=cat)
    await shift_slot(pool, done.slot, dt.timedelta(minutes=-40))
    await check(
        "booking.booking.update",
        {"actor": staff(clinic), "booking_id": str(done.booking.id), "status": "in-progress"},
    )
    await set_status(app_ctx, done, "completed")
    await check(
        "booking.review.create", {"actor": user_actor(done.user), "booking_id": str(done.booking.id), "rating": 5}
    )

    async with app_ctx.connection() as conn:
        await conn.execute("REFRESH MATERIALIZED VIEW booking_completion_rates")
    await check("booking.stats.completion_rates", {"actor": admin()})
    sub = {"actor": admin(), "name": "audit", "host": "127.0.0.1", "port": 4002, "patterns": ["booking.*"]}
    await check("booking.subscriptions.create", sub)
    await check("booking.subscriptions.find", {"actor": admin()})
    await check("booking.subscriptions.delete", {"actor": admin(), "name": "audit"})

    assert set(replies) == request_patterns(), (
        f"patterns with no case here: {sorted(request_patterns() - set(replies))}"
    )
    # pages carry at least one item, so the item shapes were checked and not only an empty list
    for pattern, reply in replies.items():
        if isinstance(reply, dict) and isinstance(reply.get("items"), list):
            assert reply["items"], f"{pattern} answered an empty page: its item shape went unchecked"
