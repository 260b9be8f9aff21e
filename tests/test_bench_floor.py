"""The floor relay (bench/floor.py) answers slots.find with the service's very bytes, or its figures mean nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from bench.floor import PgWire, columns, scram_proof, serve
from bench.lanes import Lane
from booking_rpc.context import Context
from booking_rpc.server.server import Server
from tests.helpers import hold, make_service, make_slot


@pytest.fixture
def floor_port(db_url: str) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    relay = threading.Thread(target=serve, args=(listener, db_url), daemon=True)
    relay.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        listener.close()
        relay.join(5)
        assert not relay.is_alive()


async def test_floor_answers_find_byte_for_byte_like_the_service(
    app_ctx: Context, app_server: Server, floor_port: int
) -> None:
    cat = await make_service(app_ctx)
    slots = [
        await make_slot(app_ctx.pool, cat.service_id, capacity=2, starts_in=dt.timedelta(days=3, hours=h))
        for h in range(3)
    ]
    await hold(app_ctx, cat, slots[1], uuid.uuid4())  # one slot with a unit taken: remaining differs
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date()
    service, floor = Lane("127.0.0.1", app_server.port), Lane("127.0.0.1", floor_port)
    try:
        for limit in (2, 10):  # a page with a next cursor, and the last page
            data = {
                "service_id": str(cat.service_id),
                "date_from": start.isoformat(),
                "date_to": (start + dt.timedelta(days=3)).isoformat(),
                "limit": limit,
            }
            expected = await asyncio.to_thread(service.call, "booking.slots.find", data)
            got = await asyncio.to_thread(floor.call, "booking.slots.find", data)
            assert got == expected
            assert (b'"next_cursor":null' in got) == (limit == 10)
            assert got.count(b'"slot_date"') == min(limit, 3)
    finally:
        service.close()
        floor.close()


def test_floor_client_reads_rows_and_nulls(db_url: str) -> None:
    pg = PgWire(db_url)
    try:
        pg.prepare("q", "SELECT $1::text, NULL::int, 42")
        assert [columns(row) for row in pg.execute("q", [b"caf\xc3\xa9"])] == [[b"caf\xc3\xa9", None, b"42"]]
        with pytest.raises(RuntimeError, match="PostgreSQL: "):
            pg.prepare("bad", "SELECT FROM nowhere_at_all")
    finally:
        pg.close()


def test_scram_proof_matches_rfc_7677_example() -> None:
    # RFC 7677 section 3: user "user", password "pencil"; PostgreSQL sends an empty n= (it uses the startup user)
    proof = scram_proof(
        "pencil",
        "n=user,r=rOprNGfwEbeRWgbNEkqO",
        "rOprNGfwEbeRWgbNEkqO",
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    )
    assert (
        proof
        == b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
