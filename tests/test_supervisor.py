"""`booking-rpc serve --workers N` as an operator runs it: real processes on one port, real PostgreSQL.

Each test starts the real supervisor (`python -m booking_rpc serve --workers 3`) on the test's database and
reads its JSON log to learn the ports and the worker pids.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from booking_rpc.client import Client, ClientError
from booking_rpc.context import Context
from booking_rpc.db.migrations import discover
from booking_rpc.db.pool import Pool
from booking_rpc.models.events import PUBLISHED_EVENTS
from booking_rpc.supervisor import http_get
from tests.fixtures.server import MakeServer
from tests.helpers import Recorder, book, hold, make_service, make_slot, wait_for

ROOT = Path(__file__).resolve().parents[1]


class Supervised:
    """A running `serve --workers N`, its log lines (parsed JSON) collected by a thread."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "booking_rpc", "serve", "--workers", str(workers)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.wait_for("supervisor ready", timeout=90)
        self.port: int = ready["port"]
        self.metrics_port: int = ready["metrics_port"]
        self.pids: list[int] = ready["workers"]

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"raw": line.rstrip()}  # a traceback, shown when a wait fails
            if not isinstance(entry, dict):
                entry = {"raw": line.rstrip()}
            with self.changed:
                self.lines.append(entry)
                self.changed.notify_all()

    def events(self, event: str) -> list[dict[str, Any]]:
        with self.changed:
            return [e for e in self.lines if e.get("event") == event]

    def wait_for(self, event: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in self.lines:
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None or self.process.poll() is not None, timeout):
                seen = [e.get("event") for e in self.lines[-8:]]
                raise AssertionError(f"no {event!r} {match} in the log within {timeout}s; last: {seen}")
            entry = found()
        assert entry is not None, (
            f"the supervisor exited ({self.process.returncode}) before logging {event!r}: {self.lines[-12:]}"
        )
        return entry

    def worker_metrics_ports(self) -> dict[int, int]:
        """Each worker's own /metrics port (the latest ready worker of each index)."""
        return {e["worker"]: e["metrics_port"] for e in self.events("worker ready")}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(15)


def base_env(db_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "BOOKING_RPC_PORT": "0",
        "BOOKING_RPC_METRICS_PORT": "0",
        "BOOKING_RPC_LOG_FORMAT": "json",
        "BOOKING_RPC_SHUTDOWN_TIMEOUT": "5",
        **extra,
    }


@pytest.fixture
def supervised(db_url: str) -> Iterator[list[Supervised]]:
    started: list[Supervised] = []
    yield started
    for s in started:
        s.stop()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


PINGS = (
    "booking_rpc_requests_total",
    (("kind", "message"), ("outcome", "ok"), ("pattern", "ping"), ("transport", "tcp")),
)


async def pings_counted(port: int, count: int) -> bool:
    return (await scrape(port)).get(PINGS) == count


async def ping_on_new_connections(port: int, count: int) -> None:
    for _ in range(count):
        async with Client("127.0.0.1", port) as client:
            assert await client.send("ping", {}, timeout=5) == "pong"


@asynccontextmanager
async def held_hold(
    db_url: str, ctx: Context, pool: Pool, port: int
) -> AsyncIterator[tuple[asyncio.Task[Any], Callable[[], Awaitable[None]]]]:
    """A reservation.create in flight, held on its slot's row lock; `release()` lets it finish."""
    cat = await make_service(ctx)
    slot = await make_slot(pool, cat.service_id, capacity=1)
    blocker = await asyncpg.connect(db_url)
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("SELECT 1 FROM slots WHERE id = $1 FOR UPDATE", slot)
        async with Client("127.0.0.1", port) as client:
            user = uuid.uuid4()
            body = {
                "actor": {"id": str(user), "role": "user"},
                "user_id": str(user),
                "pet_id": str(uuid.uuid4()),
                "service_id": str(cat.service_id),
                "slot_id": str(slot),
            }
            reply = asyncio.create_task(client.send("booking.reservation.create", body, timeout=60))

            async def waits_on_the_lock() -> bool:
                # the worker's statement is in flight, blocked by our row lock (not merely sent)
                blocked = await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                )
                return bool(blocked)

            await wait_for(waits_on_the_lock, timeout=30)
            assert not reply.done()
            yield reply, locked.commit
            reply.cancel()
    finally:
        await blocker.close()


def gone(pid: int) -> bool:
    """The process has exited (no such process, or a zombie nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_workers_share_a_port_a_killed_one_is_replaced_and_sigterm_drains(
    db_url: str, supervised: list[Supervised], app_ctx: Context, pool: Pool
) -> None:
    service = Supervised(base_env(db_url), workers=3)
    supervised.append(service)
    assert len(set(service.pids)) == 3

    await ping_on_new_connections(service.port, 30)
    worker_ports = service.worker_metrics_ports()
    per_worker = [(await scrape(p)).get(("booking_rpc_connections_total", ()), 0.0) for p in worker_ports.values()]
    assert sum(per_worker) == 30 and sum(1 for n in per_worker if n) >= 2  # the kernel spread the connections
    # a worker counts a request as it finishes, which may be just after its reply left
    await wait_for(lambda: pings_counted(service.metrics_port, 30), timeout=15)

    victim = service.pids[0]
    os.kill(victim, signal.SIGKILL)
    replaced = await asyncio.to_thread(service.wait_for, "worker replaced", 60)
    assert replaced["pid"] not in service.pids
    died = service.events("worker died; replacing it")
    assert [(e["pid"], e["exitcode"]) for e in died] == [(victim, -signal.SIGKILL)]
    await ping_on_new_connections(service.port, 20)  # the survivors answer meanwhile
    await asyncio.to_thread(service.wait_for, "worker ready", 60, pid=replaced["pid"])
    # the dead worker's counts are kept at their last scrape: the sum never goes back
    await wait_for(lambda: pings_counted(service.metrics_port, 50), timeout=15)
    after = await scrape(service.metrics_port)
    assert after[PINGS] == 50
    assert after[("booking_rpc_worker_restarts_total", ())] == 1
    assert after[("booking_rpc_workers", ())] == 3

    # SIGTERM while a hold waits on a row lock: the worker finishes it and the reply arrives before the exit
    async with held_hold(db_url, app_ctx, pool, service.port) as (reply, release):
        service.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(service.wait_for, "shutting down: finishing in-flight requests", 30)
        await asyncio.sleep(0.5)
        assert service.process.poll() is None  # still draining the held request
        await release()
        held = await reply
    assert held["status"] == "pending"
    assert await asyncio.to_thread(service.process.wait, 20) == 0
    assert len(service.events("stopped")) == 4  # three workers, then the supervisor


async def test_a_second_signal_kills_the_draining_workers_at_once(
    db_url: str, supervised: list[Supervised], app_ctx: Context, pool: Pool
) -> None:
    service = Supervised(base_env(db_url, BOOKING_RPC_SHUTDOWN_TIMEOUT="60"), workers=2)
    supervised.append(service)
    async with held_hold(db_url, app_ctx, pool, service.port) as (reply, _):
        service.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(service.wait_for, "shutting down: finishing in-flight requests", 30)
        service.process.send_signal(signal.SIGTERM)  # the held request would keep it draining for 60 s
        assert await asyncio.to_thread(service.process.wait, 30) == 130
        await wait_for(lambda: all(gone(pid) for pid in service.pids), timeout=30)
        with pytest.raises(ClientError):
            await reply  # its connection died with the worker: no reply


async def test_three_workers_do_each_job_and_each_delivery_once(
    db_url: str, supervised: list[Supervised], app_ctx: Context, pool: Pool, make_server: MakeServer
) -> None:
    cat = await make_service(app_ctx)
    slots = [await make_slot(pool, cat.service_id, capacity=5, starts_in=dt.timedelta(days=d + 1)) for d in range(4)]
    holds = [await hold(app_ctx, cat, s, uuid.uuid4()) for s in slots for _ in range(5)]
    bookings = [await book(app_ctx, pool, cat=cat, starts_in=dt.timedelta(days=10 + d)) for d in range(3)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE status = 'pending'")
        # the bookings scheduled their reminders; make them all due
        await conn.execute("UPDATE booking_reminders SET scheduled_time = now() - interval '1 minute'")
        reminders = await conn.fetchval("SELECT count(*) FROM booking_reminders WHERE status = 'pending'")
    recorder = Recorder([m.event_type for m in PUBLISHED_EVENTS])
    subscriber = await make_server(recorder.router, None)
    fast = {
        "BOOKING_RPC_EXPIRY_INTERVAL": "0.2",
        "BOOKING_RPC_REMINDER_INTERVAL": "0.2",
        "BOOKING_RPC_VIEWS_REFRESH_INTERVAL": "0.2",
        "BOOKING_RPC_OUTBOX_POLL_INTERVAL": "0.2",
        "BOOKING_RPC_SUBSCRIBERS": f"recorder=127.0.0.1:{subscriber.port}:*",
    }
    service = Supervised(base_env(db_url, **fast), workers=3)
    supervised.append(service)

    async def settled() -> bool:
        async with pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT (SELECT count(*) FROM reservations WHERE status = 'pending')"
                " + (SELECT count(*) FROM booking_reminders WHERE status = 'pending')"
                " + (SELECT count(*) FROM booking_events_outbox WHERE NOT published)"
            )
        return bool(left == 0)

    await wait_for(settled, timeout=60)
    await asyncio.sleep(1.0)  # time for any second delivery or second expiry to show up
    async with pool.acquire() as conn:
        expired = await conn.fetch(
            "SELECT payload->>'reservation_id' AS id, count(*) AS n FROM booking_events_outbox"
            " WHERE event_type = 'reservation.expired' GROUP BY 1"
        )
        # the recorder (`*`) is the only subscriber: a row is published by the batch that delivered it (in
        # that batch's transaction, its published_at the start of the statement that marked it, which runs
        # under the subscriber's lock: a transaction's own start may come before an earlier batch's commit)
        rows = await conn.fetch(
            "SELECT o.id, o.aggregate_id, o.published_at AS delivered_at FROM booking_events_outbox o ORDER BY o.seq"
        )
        notifications = await conn.fetchval("SELECT count(*) FROM notifications WHERE metadata ? 'reminder_id'")
        reminder_events = await conn.fetchval(
            "SELECT count(*) FROM booking_events_outbox WHERE event_type = 'booking.reminder.due'"
        )
        expired_count = await conn.fetchval("SELECT count(*) FROM reservations WHERE status = 'expired'")
    assert expired_count == len(holds) == 20
    assert sorted(r["id"] for r in expired) == sorted(str(h.id) for h in holds)
    assert {r["n"] for r in expired} == {1}  # each expired hold announced once
    assert notifications == reminder_events == reminders >= len(bookings)  # each reminder sent once

    received = [payload["event_id"] for _, payload in recorder.events]
    assert sorted(received) == sorted(str(r["id"]) for r in rows)  # every event delivered, none twice
    # Sent in per-aggregate order: each aggregate's next event goes out in a later batch (a later transaction)
    # than the one before it, whichever worker held the subscriber's lock. (On arrival, two workers' batches
    # come over two connections, so the subscriber may read a later batch first: see the README.)
    sent_at: dict[Any, list[Any]] = collections.defaultdict(list)
    for r in rows:
        sent_at[r["aggregate_id"]].append(r["delivered_at"])
    for times in sent_at.values():
        assert all(a < b for a, b in itertools.pairwise(times))

    # all three ran every job (the locks, not a single runner, kept the work single); a loaded machine may
    # have started a worker's jobs late, so wait for it
    async def every_worker_ran_every_job() -> bool:
        for port in service.worker_metrics_ports().values():
            metrics = await scrape(port)
            for job in ("expire_holds", "send_reminders", "refresh_views"):
                if metrics.get(("booking_rpc_job_runs_total", (("job", job), ("result", "ok"))), 0.0) < 1:
                    return False
        return True

    await wait_for(every_worker_ran_every_job, timeout=30)


def test_migrations_run_once_when_three_processes_start_together(empty_db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_url, "BOOKING_RPC_LOG_FORMAT": "json"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "booking_rpc", "migrate"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0]
    names = [m.name for m in discover()]
    # what each printed as its result (log lines aside): the files it applied, or that nothing was left
    results = sorted([line for line in out.splitlines() if line in {*names, "nothing to apply"}] for out in outputs)
    # one process applied everything; the others waited on the advisory lock and found nothing to do
    assert results == sorted([names, ["nothing to apply"], ["nothing to apply"]])

    async def recorded() -> list[str]:
        conn = await asyncpg.connect(empty_db_url)
        try:
            return [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")]
        finally:
            await conn.close()

    assert asyncio.run(recorded()) == names


async def test_every_worker_joins_the_nats_queue_group(
    db_url: str, nats_url: str, supervised: list[Supervised]
) -> None:
    """The settings reach the workers unchanged: each subscribes in the queue group, NATS spreads requests."""
    service = Supervised(
        base_env(db_url, BOOKING_RPC_NATS_URL=nats_url, BOOKING_RPC_NATS_QUEUE=f"q-{uuid.uuid4().hex}"), workers=2
    )
    supervised.append(service)
    # a worker is ready before NATS has its subscriptions (NATS never holds TCP up): wait for both
    for worker in (0, 1):
        await asyncio.to_thread(service.wait_for, "serving over NATS", 60, worker=worker)
    nc = await nats.connect(nats_url)
    try:
        for i in range(40):
            body = json.dumps({"pattern": "ping", "data": {}, "id": f"p{i}"}).encode()
            reply = json.loads((await nc.request("ping", body, timeout=10)).data)
            assert reply == {"response": "pong", "isDisposed": True, "id": f"p{i}"}
    finally:
        await nc.close()
    nats_pings = ("booking_rpc_requests_total", (*PINGS[1][:3], ("transport", "nats")))
    per_worker: list[float] = []

    async def all_counted() -> bool:
        # a worker counts a request as it finishes, which may be just after its reply left
        per_worker[:] = [(await scrape(port)).get(nats_pings, 0.0) for port in service.worker_metrics_ports().values()]
        return sum(per_worker) == 40

    await wait_for(all_counted, timeout=15)
    assert all(per_worker)  # one queue group over both workers


def test_the_embedded_database_is_started_once_by_the_supervisor(tmp_path: Path) -> None:
    env = {k: v for k, v in base_env("").items() if k != "DATABASE_URL"}
    env["BOOKING_RPC_DATA_DIR"] = str(tmp_path)
    saved = os.environ.pop("DATABASE_URL", None)
    try:
        service = Supervised(env, workers=2)
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
    try:
        asyncio.run(ping_on_new_connections(service.port, 4))
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(30) == 0
    finally:
        service.stop()
    assert len(service.events("database.embedded.ready")) == 1
    using = service.events("using PostgreSQL from DATABASE_URL")
    assert sorted(e["worker"] for e in using) == [0, 1]  # the workers got the supervisor's server
    assert len(service.events("database.embedded.stopped")) == 1
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()
