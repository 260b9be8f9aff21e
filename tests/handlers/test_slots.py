"""booking.slots.generate / find / block / unblock against real PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import uuid
from typing import Any

import asyncpg

from booking_rpc import jsonutil
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.models.catalog import SlotOut
from tests.helpers import (
    admin,
    assert_invariant,
    call,
    call_err,
    find_slots,
    generate_slots,
    hold_body,
    make_service,
    make_slot,
    slot_row,
    snapshot,
    starts_in_at,
)


async def set_clinic_zone(pool: Pool, clinic_id: uuid.UUID, tz: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO clinics (id, name, timezone, updated_at) VALUES ($1, 'Clinic', $2, now())",
            clinic_id,
            tz,
        )


def gen_body(service_id: uuid.UUID, day: str, **extra: Any) -> dict[str, Any]:
    return {
        "actor": admin(),
        "service_id": str(service_id),
        "date_from": day,
        "date_to": day,
        "windows": [{"start": "01:00", "end": "04:00"}, {"start": "13:00", "end": "18:00"}],
        **extra,
    }


async def stored(pool: Pool, service_id: uuid.UUID) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM slots WHERE service_id = $1 ORDER BY starts_at", service_id)


def z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def test_generate_dst_days_in_the_clinic_zone(app_ctx: Context, pool: Pool) -> None:
    cases = [
        ("Europe/Berlin", "2025-03-30", ["01:00", "01:30", "03:00", "03:30"], z("2025-03-30T00:00")),
        (
            "Europe/Berlin",
            "2025-10-26",
            ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"],
            z("2025-10-25T23:00"),
        ),
        (
            "America/New_York",
            "2025-11-02",
            ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"],
            z("2025-11-02T05:00"),
        ),
    ]
    for tz, day, night, first_utc in cases:
        cat = await make_service(app_ctx)
        await set_clinic_zone(pool, cat.clinic_id, tz)
        reply = await call(app_ctx, "booking.slots.generate", gen_body(cat.service_id, day, capacity=2))
        assert reply.timezone == tz
        rows = await stored(pool, cat.service_id)
        assert reply.created == reply.generated == len(rows) == len(night) + 10
        got = [r["slot_start_time"].strftime("%H:%M") for r in rows if r["slot_start_time"] < dt.time(12)]
        assert got == night, (tz, day)
        assert rows[0]["starts_at"] == first_utc
        keys = [(r["slot_date"], r["slot_start_time"]) for r in rows]
        assert len(set(keys)) == len(keys)
        for a, b in itertools.pairwise(rows):
            assert a["ends_at"] <= b["starts_at"], "overlap in real time"
        for r in rows:
            assert r["ends_at"] - r["starts_at"] == dt.timedelta(minutes=30)
            assert (r["capacity"], r["booked_count"], r["status"]) == (2, 0, "available")
        # idempotent: the second run adds nothing
        again = await call(app_ctx, "booking.slots.generate", gen_body(cat.service_id, day, capacity=2))
        assert (again.generated, again.created) == (reply.generated, 0)
        assert len(await stored(pool, cat.service_id)) == len(rows)


async def test_generate_defaults_weekdays_staff_and_auth(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx, duration_minutes=45)
    body = {
        "service_id": str(cat.service_id),
        "date_from": "2030-01-07",  # Monday
        "date_to": "2030-01-13",
        "weekdays": [1, 5],
        "windows": [{"start": "09:00", "end": "12:00"}],
    }
    before = await snapshot(pool)
    assert (await call_err(app_ctx, "booking.slots.generate", body)).code == "UNAUTHENTICATED"
    other_staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(uuid.uuid4())}
    assert (await call_err(app_ctx, "booking.slots.generate", {**body, "actor": other_staff})).code == "FORBIDDEN"
    user = {"id": str(uuid.uuid4()), "role": "user"}
    assert (await call_err(app_ctx, "booking.slots.generate", {**body, "actor": user})).code == "FORBIDDEN"
    missing = {**body, "actor": admin(), "service_id": str(uuid.uuid4())}
    assert (await call_err(app_ctx, "booking.slots.generate", missing)).code == "NOT_FOUND"
    bad = {**body, "actor": admin(), "windows": [{"start": "12:00", "end": "09:00"}]}
    assert (await call_err(app_ctx, "booking.slots.generate", bad)).code == "VALIDATION_FAILED"
    assert await snapshot(pool) == before

    staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(cat.clinic_id)}
    vet = uuid.uuid4()
    reply = await call(app_ctx, "booking.slots.generate", {**body, "actor": staff, "staff_id": str(vet)})
    rows = await stored(pool, cat.service_id)
    # 45-minute slots (the service's duration) 09:00, 09:45, 10:30, 11:15 on Monday and Friday
    assert reply.created == len(rows) == 8
    assert {r["slot_date"] for r in rows} == {dt.date(2030, 1, 7), dt.date(2030, 1, 11)}
    assert sorted({r["slot_start_time"] for r in rows}) == [
        dt.time(9),
        dt.time(9, 45),
        dt.time(10, 30),
        dt.time(11, 15),
    ]
    assert {r["staff_id"] for r in rows} == {vet}
    # the same schedule without staff is another set of slots (NULL staff is deduplicated too)
    r2 = await call(app_ctx, "booking.slots.generate", {**body, "actor": admin()})
    r3 = await call(app_ctx, "booking.slots.generate", {**body, "actor": admin()})
    assert (r2.created, r3.created) == (8, 0)


async def test_find_pages_in_order_with_remaining(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    await generate_slots(app_ctx, cat, "2030-03-01", "2030-03-03", "09:00", "12:00", capacity=3)
    rows = await stored(pool, cat.service_id)
    assert len(rows) == 18
    # take one unit of the first slot and block the second
    await call(app_ctx, "booking.reservation.create", hold_body(cat, rows[0]["id"]))
    await call(app_ctx, "booking.slots.block", {"actor": admin(), "slot_id": str(rows[1]["id"])})
    seen: list[Any] = []
    cursor = None
    pages = 0
    while True:
        body: dict[str, Any] = {
            "service_id": str(cat.service_id),
            "date_from": "2030-03-01",
            "date_to": "2030-03-03",
            "limit": 7,
        }
        if cursor:
            body["cursor"] = cursor
        page = await find_slots(app_ctx, body)
        seen.extend(page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert [s.id for s in seen] == [r["id"] for r in rows]
    assert [(s.slot_date, s.slot_start_time) for s in seen] == sorted((s.slot_date, s.slot_start_time) for s in seen)
    assert (seen[0].remaining, seen[0].booked_count) == (2, 1)
    assert seen[1].status == "blocked"
    assert all(s.remaining == 3 for s in seen[2:])
    only = await find_slots(
        app_ctx,
        {
            "service_id": str(cat.service_id),
            "date_from": "2030-03-01",
            "date_to": "2030-03-01",
            "only_available": True,
        },
    )
    assert [s.id for s in only.items] == [r["id"] for r in rows[:6] if r["id"] != rows[1]["id"]]
    one_day = await find_slots(
        app_ctx,
        {"service_id": str(cat.service_id), "date_from": "2030-03-02", "date_to": "2030-03-02"},
    )
    assert {s.slot_date for s in one_day.items} == {dt.date(2030, 3, 2)} and len(one_day.items) == 6
    assert one_day.next_cursor is None


async def test_find_cursor_holds_the_last_rows_key_as_postgresql_writes_it(app_ctx: Context, pool: Pool) -> None:
    """The cursor's date and time are the statement's text (what the NestJS peer's cursor holds too): a start at
    a fraction of a second is "09:00:00.12", not Python's "09:00:00.120000", and the next page follows it."""
    cat = await make_service(app_ctx)
    await generate_slots(app_ctx, cat, "2030-03-01", "2030-03-01", "09:00", "10:00", capacity=3)
    first, second = await stored(pool, cat.service_id)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE slots SET slot_start_time = '09:00:00.12' WHERE id = $1", first["id"])
    body = {"service_id": str(cat.service_id), "date_from": "2030-03-01", "date_to": "2030-03-01", "limit": 1}
    page = await find_slots(app_ctx, body)
    assert page.next_cursor is not None
    padded = page.next_cursor + "=" * (-len(page.next_cursor) % 4)
    assert base64.urlsafe_b64decode(padded) == f'["2030-03-01","09:00:00.12","{first["id"]}"]'.encode()
    rest = await find_slots(app_ctx, {**body, "cursor": page.next_cursor})
    assert [s.id for s in page.items + rest.items] == [first["id"], second["id"]] and rest.next_cursor is None


async def test_find_validation_and_staff_filter(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    vet = uuid.uuid4()
    base = {
        "actor": admin(),
        "service_id": str(cat.service_id),
        "date_from": "2030-05-01",
        "date_to": "2030-05-01",
        "windows": [{"start": "09:00", "end": "10:00"}],
    }
    await call(app_ctx, "booking.slots.generate", {**base, "staff_id": str(vet)})
    await call(app_ctx, "booking.slots.generate", base)
    q = {"service_id": str(cat.service_id), "date_from": "2030-05-01", "date_to": "2030-05-01"}
    assert len((await find_slots(app_ctx, q)).items) == 4
    staff_only = await find_slots(app_ctx, {**q, "staff_id": str(vet)})
    assert [s.staff_id for s in staff_only.items] == [vet, vet]
    assert (await call_err(app_ctx, "booking.slots.find", {**q, "limit": 501})).code == "VALIDATION_FAILED"
    assert (await call_err(app_ctx, "booking.slots.find", {**q, "date_to": "2030-04-01"})).code == "VALIDATION_FAILED"
    assert (await call_err(app_ctx, "booking.slots.find", {**q, "cursor": "!!!"})).code == "BAD_REQUEST"
    # open to anyone, and an empty result for an unknown service
    empty = await find_slots(app_ctx, {**q, "service_id": str(uuid.uuid4())})
    assert empty.items == [] and empty.next_cursor is None


async def test_block_and_unblock(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot))
    staff = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(cat.clinic_id)}
    stranger = {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(uuid.uuid4())}
    before = await snapshot(pool)
    err = await call_err(app_ctx, "booking.slots.block", {"actor": stranger, "slot_id": str(slot)})
    assert (err.code, err.status_code) == ("FORBIDDEN", 403)
    err = await call_err(app_ctx, "booking.slots.block", {"actor": staff, "slot_id": str(uuid.uuid4())})
    assert err.code == "NOT_FOUND"
    assert await snapshot(pool) == before
    out = await call(app_ctx, "booking.slots.block", {"actor": staff, "slot_id": str(slot)})
    assert (out.status, out.booked_count) == ("blocked", 1)  # the existing hold keeps its unit
    row = await slot_row(pool, slot)
    assert (row["status"], row["booked_count"]) == ("blocked", 1)
    await call(app_ctx, "booking.slots.block", {"actor": staff, "slot_id": str(slot)})  # idempotent
    out = await call(app_ctx, "booking.slots.unblock", {"actor": staff, "slot_id": str(slot)})
    assert out.status == "booked"  # full again
    # a blocked slot with room stays blocked on release, and becomes 'available' on unblock
    slot2 = await make_slot(pool, cat.service_id, capacity=2, starts_in=dt.timedelta(days=3))
    await call(app_ctx, "booking.slots.block", {"actor": staff, "slot_id": str(slot2)})
    err = await call_err(app_ctx, "booking.reservation.create", hold_body(cat, slot2))
    assert err.code == "SLOT_BLOCKED"
    out = await call(app_ctx, "booking.slots.unblock", {"actor": staff, "slot_id": str(slot2)})
    assert (out.status, out.remaining) == ("available", 2)
    await call(app_ctx, "booking.reservation.create", hold_body(cat, slot2))
    await assert_invariant(pool)


async def test_find_writes_instants_as_the_models_do(app_ctx: Context, pool: Pool) -> None:
    """slots.find's SQL-built items carry starts_at/ends_at exactly as SlotOut writes them (booking_iso_instant):
    microseconds kept when there are some, none when there are none."""
    cat = await make_service(app_ctx)
    whole = await make_slot(pool, cat.service_id)
    # at 10:00: after 23:30 a slot 'now + 3 days' ended at midnight's last microsecond, and + 1 µs was 00:00
    fine = await make_slot(pool, cat.service_id, starts_in=starts_in_at(3, dt.time(10)))
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE slots SET starts_at = starts_at + interval '0.12 seconds',"
            " ends_at = ends_at + interval '0.000001 seconds' WHERE id = $1",
            fine,
        )
    today = dt.date.today()
    q = {"service_id": str(cat.service_id), "date_from": str(today), "date_to": str(today + dt.timedelta(days=5))}
    wire = jsonutil.loads(jsonutil.dumps(await call(app_ctx, "booking.slots.find", q)))
    items = {uuid.UUID(i["id"]): i for i in wire["items"]}
    assert set(items) == {whole, fine}
    for slot_id, item in items.items():
        row = await slot_row(pool, slot_id)
        model = jsonutil.loads(jsonutil.dumps(SlotOut.model_validate(item)))
        assert (item["starts_at"], item["ends_at"]) == (model["starts_at"], model["ends_at"])
        assert dt.datetime.fromisoformat(item["starts_at"]) == row["starts_at"]
        assert dt.datetime.fromisoformat(item["ends_at"]) == row["ends_at"]
    assert items[fine]["starts_at"].endswith(".120000Z") and items[fine]["ends_at"].endswith(".000001Z")
    assert items[whole]["starts_at"].endswith(":00Z") and "." not in items[whole]["starts_at"]


# What json_build_object writes for a page's items (typed values read back from the page itself): slots.find
# concatenates its items' text, and the bytes must be json_agg(json_build_object(...))'s JSON as
# JSON.stringify writes it (compact: NestJS's own form of the same page, migration 0049).
JSON_BUILD_OBJECT_ITEMS = """
SELECT COALESCE(json_agg(json_build_object(
           'id', (i->>'id')::uuid, 'service_id', (i->>'service_id')::uuid, 'staff_id', (i->>'staff_id')::uuid,
           'slot_date', (i->>'slot_date')::date, 'slot_start_time', (i->>'slot_start_time')::time,
           'slot_end_time', (i->>'slot_end_time')::time, 'starts_at', i->>'starts_at', 'ends_at', i->>'ends_at',
           'status', i->>'status', 'capacity', (i->>'capacity')::int, 'booked_count', (i->>'booked_count')::int,
           'remaining', (i->>'remaining')::int
       ) ORDER BY n), '[]')::text
FROM json_array_elements($1::text::json) WITH ORDINALITY AS e(i, n)
"""


async def test_find_items_are_json_build_objects_values_in_compact_json(app_ctx: Context, pool: Pool) -> None:
    cat = await make_service(app_ctx)
    free = await make_slot(pool, cat.service_id, capacity=3)
    blocked = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=2, hours=1), status="blocked")
    lapsed = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=2, hours=2))
    fine = await make_slot(pool, cat.service_id, capacity=2, starts_in=dt.timedelta(days=3))
    await call(app_ctx, "booking.reservation.create", hold_body(cat, lapsed))  # full, then its hold lapses
    await call(app_ctx, "booking.reservation.create", hold_body(cat, fine))  # one unit held, live
    vet = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE slot_id = $1", lapsed
        )
        # item_head is rendered when the slot is written (this update recomputes it), under the writer's
        # settings: the stored text must not follow them (the generated column's IMMUTABLE claim)
        await conn.execute("SET LOCAL DateStyle = 'SQL, DMY'")
        await conn.execute("SET LOCAL TimeZone = 'Asia/Kathmandu'")
        await conn.execute(
            "UPDATE slots SET staff_id = $2, starts_at = starts_at + interval '0.12 seconds' WHERE id = $1", fine, vet
        )
    today = dt.date.today()
    args = (cat.service_id, today, today + dt.timedelta(days=5), None, False, today, dt.time(0), uuid.UUID(int=0))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL DateStyle = 'SQL, DMY'")  # nor do the finds' items
        page = await conn.fetchrow(app_ctx.sql["slots.find"], *args, 100)
        short = await conn.fetchrow(app_ctx.sql["slots.find"], *args, 2)
        empty = await conn.fetchrow(app_ctx.sql["slots.find"], *args[:5], today + dt.timedelta(days=9), *args[6:], 9)
        built = [await conn.fetchval(JSON_BUILD_OBJECT_ITEMS, r["items"].decode()) for r in (page, short, empty)]
    # the page reaches the service as bytes (db/pool.py RAW_TEXT_TYPE), to be handed on as they came
    expected = [jsonutil.dumps(jsonutil.loads(text)) for text in built]
    assert [page["items"], short["items"], empty["items"]] == expected
    items = {uuid.UUID(i["id"]): i for i in jsonutil.loads(page["items"])}
    assert list(items) == [free, blocked, lapsed, fine] and empty["items"] == b"[]"
    assert (items[lapsed]["status"], items[lapsed]["booked_count"], items[lapsed]["remaining"]) == ("available", 0, 1)
    assert (items[fine]["booked_count"], items[fine]["remaining"], items[fine]["staff_id"]) == (1, 1, str(vet))
    assert items[free]["staff_id"] is None and items[blocked]["status"] == "blocked"
    assert items[fine]["starts_at"].endswith(".120000Z") and page["items"].startswith(b'[{"id":"')
    assert (short["has_more"], short["last_id"]) == (True, blocked)


async def test_a_slot_written_with_an_empty_search_path_gets_its_item_head(app_ctx: Context, pool: Pool) -> None:
    """pg_dump's output (a restore, pg_upgrade's schema copy) runs with search_path = '': CREATE TABLE slots
    and every slot it copies in read item_head's function then (migration 0046)."""
    cat = await make_service(app_ctx)
    slot_id = await make_slot(pool, cat.service_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL search_path = ''")
        await conn.execute("CREATE TEMPORARY TABLE slots_restored (LIKE public.slots INCLUDING ALL)")
        await conn.execute(
            "INSERT INTO slots_restored (id, service_id, staff_id, slot_date, slot_start_time, slot_end_time,"
            " starts_at, ends_at) SELECT id, service_id, staff_id, slot_date, slot_start_time, slot_end_time,"
            " starts_at, ends_at FROM public.slots WHERE id = $1",
            slot_id,
        )
        restored = await conn.fetchval("SELECT item_head FROM slots_restored WHERE id = $1", slot_id)
    async with pool.acquire() as conn:
        assert restored == await conn.fetchval("SELECT item_head FROM slots WHERE id = $1", slot_id)
    assert restored.startswith(f'{{"id":"{slot_id}"')
