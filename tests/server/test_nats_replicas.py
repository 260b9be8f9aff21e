"""Three booking-rpc processes in one NATS queue group on one database: 600 concurrent reservation.create
over NATS on slots of capacity 3, one process killed with SIGKILL mid-load. The others keep answering,
every slot ends with exactly its capacity held, every other request a structured 409, no acknowledged hold
is lost and the capacity invariant holds."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from tests.helpers import assert_invariant, fetch, hold_body, make_service, make_slot, spawn_service

ROOT = Path(__file__).resolve().parents[2]
SLOTS, CAPACITY, PER_SLOT = 50, 3, 12  # 600 requests, 12 for each slot of capacity 3


def start_replica(db_url: str, nats_url: str, queue: str) -> subprocess.Popen[str]:
    return spawn_service(
        db_url, log=True, BOOKING_RPC_JOBS_ENABLED="false", BOOKING_RPC_NATS_URL=nats_url, BOOKING_RPC_NATS_QUEUE=queue
    )


def wait_serving(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        try:
            if json.loads(line).get("event") == "serving over NATS":
                return
        except ValueError:
            continue
    raise AssertionError("a replica exited before serving over NATS")


def drain(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for _ in process.stdout:
        pass


@pytest.fixture
def replicas(db_url: str, nats_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    queue = f"replicas-{secrets.token_hex(3)}"
    processes = [start_replica(db_url, nats_url, queue) for _ in range(3)]
    try:
        for process in processes:
            wait_serving(process)
        for process in processes:  # keep reading their logs so no pipe fills up
            threading.Thread(target=drain, args=(process,), daemon=True).start()
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


async def create(nc: NatsClient, body: dict[str, Any], timeout: float) -> Any:
    """One reservation.create as ClientNats sends it; the reply's JSON, or None without a reply in time."""
    request = {"pattern": "booking.reservation.create", "data": body, "id": str(uuid.uuid4())}
    try:
        reply = await nc.request("booking.reservation.create", orjson.dumps(request), timeout=timeout)
    except nats.errors.TimeoutError:
        return None
    return orjson.loads(reply.data)


async def test_three_replicas_one_killed_mid_load_keep_the_invariant(
    replicas: list[subprocess.Popen[str]], app_ctx: Context, pool: Pool, nats_url: str
) -> None:
    cat = await make_service(app_ctx)
    slots = [
        await make_slot(pool, cat.service_id, capacity=CAPACITY, starts_in=dt.timedelta(days=2 + i))
        for i in range(SLOTS)
    ]
    bodies = [hold_body(cat, slot) for slot in slots for _ in range(PER_SLOT)]
    first_wave, second_wave = bodies[::2], bodies[1::2]  # each wave holds 6 requests per slot
    nc = await nats.connect(nats_url)
    try:
        wave = [asyncio.create_task(create(nc, body, 5.0)) for body in first_wave]
        async with asyncio.timeout(30):
            while sum(task.done() for task in wave) < 100:
                await asyncio.sleep(0.005)
        replicas[0].send_signal(signal.SIGKILL)  # mid-load: it has requests in flight
        replicas[0].wait(10)
        first = await asyncio.gather(*wave)
        second = await asyncio.gather(*(create(nc, body, 5.0) for body in second_wave))
    finally:
        await nc.close()
    assert all(reply is not None for reply in second), "the surviving replicas left requests unanswered"
    lost = sum(reply is None for reply in first)  # in flight on the killed replica: no reply
    assert lost < len(first) // 2
    replies = [(body, reply) for body, reply in zip(first_wave + second_wave, first + second, strict=True) if reply]
    acked: Counter[str] = Counter()
    for body, reply in replies:
        if "err" in reply:
            err = reply["err"]
            assert set(err) >= {"status", "statusCode", "code", "message"} and err["statusCode"] == 409, err
            assert reply["isDisposed"] is True
        else:
            assert reply["response"]["slot_id"] == body["slot_id"]
            acked[body["slot_id"]] += 1
    held = await fetch(
        pool, "SELECT slot_id, user_id FROM reservations WHERE status = 'pending' AND slot_id = ANY($1::uuid[])", slots
    )
    per_slot = Counter(str(r["slot_id"]) for r in held)
    assert per_slot == {str(slot): CAPACITY for slot in slots}  # exactly capacity, everywhere
    held_users = {(str(r["slot_id"]), str(r["user_id"])) for r in held}
    for body, reply in replies:
        if "response" in reply:
            assert (body["slot_id"], body["user_id"]) in held_users  # no acknowledged hold lost
    assert all(count <= CAPACITY for count in acked.values())
    await assert_invariant(pool)
