"""The test toolkit: every helper a test file needs, defined once (test files never import each other).

Calling patterns in-process, actors, catalogue/slot/hold/booking builders, direct reads of the tables, the
outbox checks and the capacity invariant, a TCP relay in front of a NATS server. Fixtures (databases, servers, the app) are in tests/fixtures/.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import orjson
import pytest

from booking_rpc import jsonutil
from booking_rpc.app import service_router
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.devnats import NatsServer
from booking_rpc.domain.booking_states import ACTIVE
from booking_rpc.errors import RpcError
from booking_rpc.events.outbox import enqueue
from booking_rpc.models.bookings import BookingOut
from booking_rpc.models.catalog import SlotsPage
from booking_rpc.models.events import PUBLISHED_EVENTS, ReservationCancelled
from booking_rpc.router import NO_RESPONSE, Router
from booking_rpc.schemas import DEFAULT_DIR as SCHEMAS_DIR

# --- calling patterns ---------------------------------------------------------------------------------


@functools.cache
def app_router() -> Router:
    """The service's router (every handler, and its error mappers), built once per test process."""
    return service_router()


def _closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties refusing others: a reply must be the
    published shape exactly, not merely contain it."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.cache
def reply_validator(pattern: str) -> jsonschema.Draft202012Validator:
    """The published reply schema of `pattern` (schemas/patterns/<pattern>.reply.json), closed."""
    schema = json.loads((SCHEMAS_DIR / "patterns" / f"{pattern}.reply.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(
        _closed(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def assert_reply_published(pattern: str, reply: Any) -> None:
    """The reply, as JSON carries it, validates against the pattern's published reply schema."""
    wire = None if reply is NO_RESPONSE else jsonutil.loads(jsonutil.dumps(reply))
    errors = sorted(reply_validator(pattern).iter_errors(wire), key=lambda e: list(e.absolute_path))
    assert not errors, f"{pattern} reply is not its published shape: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


async def call(ctx: Context, pattern: str, data: Any) -> Any:
    """Invoke a pattern in-process (no socket; validation and error mapping included), raising RpcError
    like the wire would carry it. A request's reply is checked against its published schema (schemas/),
    so every handler test also checks the contract."""
    route = app_router().lookup(pattern)
    assert route is not None, f"no handler for {pattern}"
    reply = await route.invoke(data, ctx)
    if route.kind == "message" and not route.streaming:
        assert_reply_published(route.route, reply)
    if isinstance(reply, orjson.Fragment) and route.reply is not None:
        # a reply the handler rendered itself (models.common.row_json): read back as its declared model
        return route.reply.model_validate_json(jsonutil.dumps(reply))
    return reply


async def call_err(ctx: Context, pattern: str, data: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await call(ctx, pattern, data)
    return info.value


async def find_slots(ctx: Context, data: dict[str, Any]) -> SlotsPage:
    """booking.slots.find in-process, its reply read back through JSON as the wire carries it."""
    return SlotsPage.model_validate(jsonutil.loads(jsonutil.dumps(await call(ctx, "booking.slots.find", data))))


# --- actors -------------------------------------------------------------------------------------------


def admin() -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "role": "admin"}


def user_actor(user_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(user_id), "role": "user"}


def staff(clinic_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "role": "clinic_staff", "clinic_id": str(clinic_id)}


# --- catalogue, slots, holds, bookings ----------------------------------------------------------------


@dataclass
class Catalog:
    clinic_id: uuid.UUID
    service_id: uuid.UUID


async def make_service(ctx: Context, **fields: Any) -> Catalog:
    clinic = fields.pop("clinic_id", uuid.uuid4())
    body = {"actor": admin(), "clinic_id": str(clinic), "name": "Vaccination", "price": "150000.00", **fields}
    svc = await call(ctx, "booking.services.upsert", body)
    return Catalog(clinic_id=clinic, service_id=svc.id)


def starts_in_at(days: int, at: dt.time) -> dt.timedelta:
    """The `starts_in` of make_slot for a slot at `at` UTC, `days` days from today: away from midnight, so the
    slot keeps its date and its 30 minutes whatever time of day the test runs."""
    now = dt.datetime.now(dt.UTC)
    return dt.datetime.combine(now.date() + dt.timedelta(days=days), at, dt.UTC) - now


async def make_slot(
    pool: Pool,
    service_id: uuid.UUID,
    *,
    capacity: int = 1,
    starts_in: dt.timedelta = dt.timedelta(days=2),
    status: str = "available",
) -> uuid.UUID:
    """One slot inserted directly (UTC clinic), starting `starts_in` from now (to the minute), 30 minutes long
    unless midnight comes first: then it ends at the day's last microsecond (local start < end on one date).
    Moved an hour earlier instead, as it was, a slot due in 3 hours started under the 2 hours a test's minimum
    notice asks for whenever the test ran between 20:30 and 21:00 UTC."""
    start = (dt.datetime.now(dt.UTC) + starts_in).replace(second=0, microsecond=0)
    end = min(start + dt.timedelta(minutes=30), start.replace(hour=23, minute=59, second=59, microsecond=999999))
    async with pool.acquire() as conn:
        slot_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,
                                  capacity, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
            service_id,
            start.date(),
            start.time(),
            end.time(),
            start,
            end,
            capacity,
            status,
        )
    return slot_id


async def generate_slots(
    ctx: Context, cat: Catalog, date_from: str, date_to: str, start: str, end: str, **fields: Any
) -> Any:
    """booking.slots.generate (as an admin) for `cat`'s service: one daily window start-end from date_from to
    date_to (ISO dates and times); `fields` the request's others (capacity, slot_minutes, ...)."""
    body = {
        "actor": admin(),
        "service_id": str(cat.service_id),
        "date_from": date_from,
        "date_to": date_to,
        "windows": [{"start": start, "end": end}],
        **fields,
    }
    return await call(ctx, "booking.slots.generate", body)


async def shift_slot(pool: Pool, slot_id: uuid.UUID, starts_in: dt.timedelta) -> None:
    """Move a slot's instants relative to the database clock (the local DATE/TIME stay as they are)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE slots SET starts_at = now() + $2::interval,
                                ends_at = now() + $2::interval + interval '30 minutes' WHERE id = $1""",
            slot_id,
            starts_in,
        )


def hold_body(cat: Catalog, slot_id: uuid.UUID, user_id: uuid.UUID | None = None, **extra: Any) -> dict[str, Any]:
    """A booking.reservation.create payload by the user themself (a fresh user and pet unless given)."""
    uid = user_id or uuid.uuid4()
    return {
        "actor": user_actor(uid),
        "user_id": str(uid),
        "pet_id": str(uuid.uuid4()),
        "service_id": str(cat.service_id),
        "slot_id": str(slot_id),
        **extra,
    }


async def hold(ctx: Context, cat: Catalog, slot: uuid.UUID, user: uuid.UUID, pet: uuid.UUID | None = None) -> Any:
    return await call(ctx, "booking.reservation.create", hold_body(cat, slot, user, pet_id=str(pet or uuid.uuid4())))


async def expire_now(pool: Pool, reservation_id: uuid.UUID) -> None:
    """Move a hold's TTL into the past on the database clock (instead of sleeping)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1", reservation_id
        )


def confirm_body(res: Any, **extra: Any) -> dict[str, Any]:
    return {
        "actor": user_actor(res.user_id),
        "reservation_id": str(res.id),
        "lock_id": res.lock_id,
        "user_id": str(res.user_id),
        **extra,
    }


@dataclass
class Booked:
    cat: Catalog
    slot: uuid.UUID
    user: uuid.UUID
    booking: BookingOut


async def book(
    ctx: Context,
    pool: Pool,
    *,
    cat: Catalog | None = None,
    starts_in: dt.timedelta = dt.timedelta(days=3),
    capacity: int = 1,
    payment: dict[str, Any] | None = None,
    **service: Any,
) -> Booked:
    """A confirmed (or pending_approval) booking through the real hold + confirm patterns."""
    cat = cat or await make_service(ctx, **service)
    slot = await make_slot(pool, cat.service_id, capacity=capacity, starts_in=starts_in)
    user = uuid.uuid4()
    res = await hold(ctx, cat, slot, user)
    pay = (
        payment
        if payment is not None
        else {"method": "card", "external_reference": f"ext-{uuid.uuid4()}", "status": "success"}
    )
    b = await call(ctx, "booking.reservation.confirm", confirm_body(res, payment=pay))
    return Booked(cat, slot, user, b)


async def set_status(ctx: Context, b: Booked, status: str) -> Any:
    return await call(
        ctx,
        "booking.booking.update",
        {"actor": staff(b.cat.clinic_id), "booking_id": str(b.booking.id), "status": status},
    )


async def insert_booking(pool: Pool, cat: Catalog, slot_id: uuid.UUID, status: str = "confirmed") -> None:
    """An active booking on the slot, taking its unit like the confirm flow does."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO bookings (user_id, pet_id, clinic_id, service_id, slot_id, reference_code,
                                     amount, status)
               VALUES ($1, $2, $3, $4, $5, $6, 100, $7)""",
            uuid.uuid4(),
            uuid.uuid4(),
            cat.clinic_id,
            cat.service_id,
            slot_id,
            uuid.uuid4().hex[:12],
            status,
        )
        await conn.execute(
            """UPDATE slots SET booked_count = booked_count + 1,
                      status = CASE WHEN booked_count + 1 >= capacity THEN 'booked' ELSE status END
               WHERE id = $1""",
            slot_id,
        )


# --- reading the database -----------------------------------------------------------------------------


async def fetch(pool: Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def fetchrow(pool: Pool, sql: str, *args: Any) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(sql, *args)
    assert row is not None
    return row


async def slot_row(pool: Pool, slot_id: uuid.UUID) -> asyncpg.Record:
    return await fetchrow(pool, "SELECT * FROM slots WHERE id = $1", slot_id)


async def snapshot(pool: Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a hold touches, for "an error changes nothing"."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with pool.acquire() as conn:
        for table in ("slots", "reservations", "booking_events_outbox", "services", "bookings"):
            out[table] = [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]
    return out


# --- the outbox ---------------------------------------------------------------------------------------

ENVELOPE = ("event_type", "event_id", "occurred_at")
EVENT_MODELS = {m.event_type: m for m in PUBLISHED_EVENTS}
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


async def outbox(pool: Pool, event_type: str | None = None) -> list[asyncpg.Record]:
    return await fetch(
        pool,
        "SELECT * FROM booking_events_outbox WHERE $1::text IS NULL OR event_type = $1 ORDER BY seq",
        event_type,
    )


def assert_models_own_json(rows: list[asyncpg.Record]) -> None:
    """Each payload (envelope aside) is its model's own JSON, whoever wrote it: SQL or Python; instants "...Z"."""
    for r in rows:
        payload = dict(r["payload"])
        assert INSTANT.fullmatch(payload["occurred_at"]), payload["occurred_at"]
        fields = {k: v for k, v in payload.items() if k not in ENVELOPE}
        model = EVENT_MODELS[r["event_type"]]
        assert model.model_validate(fields).model_dump(mode="json") == fields


async def validate_outbox(pool: Pool) -> int:
    """Every outbox payload is its event model's own JSON (the seed shape + envelope), whichever path wrote
    it (Python, a statement, the booking trigger); returns the row count."""
    rows = await outbox(pool)
    for r in rows:
        payload = dict(r["payload"])
        assert payload["event_type"] == r["event_type"]
        uuid.UUID(payload["event_id"])
    assert_models_own_json(rows)
    return len(rows)


# --- the capacity invariant ---------------------------------------------------------------------------

# Which bookings hold a unit is the domain's rule (booking_states.ACTIVE), passed in, never re-listed here.
CAPACITY_SQL = """
SELECT s.id, s.capacity, s.booked_count,
       (SELECT count(*) FROM reservations r WHERE r.slot_id = s.id AND r.status = 'pending')
     + (SELECT count(*) FROM bookings b WHERE b.slot_id = s.id AND b.status = ANY($1::text[])) AS holders
FROM slots s
"""


async def capacity_violations(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Slots breaking booked_count = pending holds + active bookings, or 0 <= booked_count <= capacity.

    Pending holds past their TTL still count until they are given back: that is what booked_count holds.
    """
    rows = await conn.fetch(CAPACITY_SQL, sorted(ACTIVE))
    return [dict(r) for r in rows if r["booked_count"] != r["holders"] or not 0 <= r["booked_count"] <= r["capacity"]]


HOLD_QUOTA_SQL = """
SELECT kind, owner_id, counted, actual FROM (
    SELECT q.owner_kind AS kind, q.owner_id, q.pending AS counted,
           (SELECT count(*) FROM reservations r
            WHERE r.status = 'pending'
              AND CASE q.owner_kind WHEN 'user' THEN r.user_id ELSE r.pet_id END = q.owner_id) AS actual
    FROM hold_quotas q
    UNION ALL
    SELECT 'user', r.user_id, 0, count(*) FROM reservations r
    WHERE r.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM hold_quotas q WHERE q.owner_kind = 'user' AND q.owner_id = r.user_id)
    GROUP BY r.user_id
) counts
WHERE counted <> actual
"""


async def hold_quota_drift(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Users and pets whose pending-hold counter (hold_quotas) is not the number of their pending holds."""
    return [dict(r) for r in await conn.fetch(HOLD_QUOTA_SQL)]


async def assert_invariant(pool: Pool) -> None:
    """The capacity invariant holds for every slot, and every pending-hold counter equals its holds."""
    async with pool.acquire() as conn:
        assert await capacity_violations(conn) == []
        assert await hold_quota_drift(conn) == []


# --- events -------------------------------------------------------------------------------------------


def cancelled(aggregate: uuid.UUID) -> ReservationCancelled:
    """A reservation.cancelled event of `aggregate` (the relay tests' event)."""
    return ReservationCancelled(
        reservation_id=aggregate, user_id=uuid.uuid4(), slot_id=uuid.uuid4(), cancelled_at="2026-01-01T00:00:00Z"
    )


async def write_events(ctx: Context, aggregate: uuid.UUID, count: int) -> list[str]:
    """`count` events of `aggregate`, each committed in its own transaction; their ids in order."""
    ids = []
    for _ in range(count):
        async with ctx.transaction() as conn:
            ids.append(str(await enqueue(conn, ctx.sql, aggregate, cancelled(aggregate))))
    return ids


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll `predicate` (plain or async) until it returns something true; AssertionError after `timeout` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# --- subscribers ----------------------------------------------------------------------------------------


class Recorder:
    """A subscriber service: a router whose event handlers record what arrives, in order of arrival."""

    def __init__(self, patterns: list[str]) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.router = Router()
        for pattern in patterns:
            self.router.event(pattern)(self._make(pattern))

    def _make(self, pattern: str) -> Any:
        async def handler(payload: dict[str, Any], ctx: Any) -> None:
            self.events.append((pattern, payload))

        return handler


# --- NATS ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay(
    server: NatsServer,
    *,
    hold: Callable[[bytes], bool],
    cut: Callable[[bytes], bool] = lambda written: False,
    deaf: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """The URL of a TCP relay to `server`. The client's bytes pass at once; the server's are held while
    `hold(held)` and then go in one write (one read for the client); an EOF follows as soon as `cut` says so
    of a write, else with the server's own, in the same callback as the last write (both reach the
    client's socket together). Once `deaf` is set the relay reads nothing more of what clients send (a
    server that stopped reading, a dead link: their bytes pile up in the sockets) and turns new ones away."""
    connections: list[asyncio.StreamWriter] = []
    pipes: list[asyncio.Task[None]] = []

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)

    async def stop_reading(deaf: asyncio.Event) -> None:
        await deaf.wait()
        for task in pipes:
            task.cancel()

    async def serve(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        connections.append(client_out)
        if deaf is not None and deaf.is_set():
            client_out.close()
            return
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            client_out.close()  # the server is down: the client's reconnect fails at once
            return
        connections.append(server_out)
        pipes.append(asyncio.create_task(pipe(client_in, server_out)))
        held, cut_off = b"", False
        while not cut_off and (data := await server_in.read(65536)):
            held += data
            if not hold(held):
                client_out.write(held)
                held, cut_off = b"", cut(held)
        client_out.write(held)
        client_out.write_eof()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    if deaf is not None:
        pipes.append(asyncio.create_task(stop_reading(deaf)))
    try:
        yield f"nats://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        for task in pipes:
            task.cancel()
        for writer in connections:
            writer.close()


# --- service processes --------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def spawn_service(db_url: str, *, log: bool = False, **env: str) -> subprocess.Popen[str]:
    """`booking-rpc serve --no-migrate` on `db_url` (TCP port 0, no metrics), `env` on top; its JSON log on
    stdout when `log` (read it, or it may fill the pipe), else discarded."""
    environ = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BOOKING_RPC_PORT": "0",
        "BOOKING_RPC_METRICS_ENABLED": "false",
        "BOOKING_RPC_LOG_FORMAT": "json",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "booking_rpc", "serve", "--no-migrate"],
        cwd=REPO_ROOT,
        env=environ,
        stdout=subprocess.PIPE if log else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        text=True,
    )
