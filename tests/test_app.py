"""The whole service as an operator runs it: real process, real sockets, real HTTP, graceful stop (and
`running_app` in-process, as an embedder runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import nats
import orjson
import pytest
from pydantic import SecretStr

from booking_rpc.app import running_app
from booking_rpc.client import Client
from booking_rpc.config import Settings
from booking_rpc.devnats import NatsServer
from tests.fixtures.service import ServiceProcess, http_get, start_service
from tests.helpers import admin, relay, wait_for

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_service(db_url: str, **extra_env: str) -> Iterator[ServiceProcess]:
    service = start_service({"DATABASE_URL": db_url, "BOOKING_RPC_SHUTDOWN_TIMEOUT": "5", **extra_env})
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def service(db_url: str) -> Iterator[ServiceProcess]:
    with running_service(db_url) as running:
        yield running


async def test_serves_pings_counts_them_and_stops_cleanly(service: ServiceProcess) -> None:
    async with Client("127.0.0.1", service.port) as client:
        assert await client.send("ping", {}) == "pong"
    assert http_get(service.metrics_port, "/healthz")[0] == 200
    assert http_get(service.metrics_port, "/readyz") == (200, "ready\n")
    status, metrics = await asyncio.to_thread(http_get, service.metrics_port, "/metrics")
    assert status == 200
    assert 'booking_rpc_requests_total{kind="message",outcome="ok",pattern="ping",transport="tcp"} 1.0' in metrics
    assert "booking_rpc_outbox_pending 0.0" in metrics
    assert "booking_rpc_db_pool_waits_total 0.0" in metrics
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(15) == 0


async def test_serves_over_nats_beside_tcp_and_shows_the_nats_state(
    db_url: str, nats_url: str, jetstream_stream: str
) -> None:
    nats_env = {
        "BOOKING_RPC_NATS_URL": nats_url,
        "BOOKING_RPC_NATS_QUEUE": "app-test",
        "BOOKING_RPC_EVENTS_NATS": "true",
        "BOOKING_RPC_NATS_STREAM": jetstream_stream,
    }
    with running_service(db_url, **nats_env) as service:
        async with asyncio.timeout(15):
            while http_get(service.metrics_port, "/readyz")[1] != "ready\nnats: connected\njetstream: connected\n":
                await asyncio.sleep(0.05)
        nc = await nats.connect(nats_url)
        try:
            reply = await nc.request("ping", b'{"pattern":"ping","data":{},"id":"1"}', timeout=5)
        finally:
            await nc.close()
        assert reply.data == b'{"response":"pong","isDisposed":true,"id":"1"}'
        async with Client("127.0.0.1", service.port) as client:
            assert await client.send("ping", {}) == "pong"
        metrics = (await asyncio.to_thread(http_get, service.metrics_port, "/metrics"))[1]
        for transport in ("tcp", "nats"):
            line = (
                f'booking_rpc_requests_total{{kind="message",outcome="ok",pattern="ping",transport="{transport}"}} 1.0'
            )
            assert line in metrics
        assert "booking_rpc_nats_connected 1.0" in metrics and "booking_rpc_jetstream_connected 1.0" in metrics
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(15) == 0


async def test_sigterm_while_nats_reconnects_to_a_server_gone_deaf_still_stops_everything(
    db_url: str, nats_server_factory: Callable[..., NatsServer]
) -> None:
    """NATS stops reading what the service writes, then goes (an EOF): the service's NATS client reconnects
    with the old socket's bytes unsent. SIGTERM must still stop the whole service (TCP drain, relay, pool),
    promptly and with exit status 0: the NATS transport's close may not raise nats-py's CancelledError."""
    server = nats_server_factory()
    deaf = asyncio.Event()
    echo_ok = 'booking_rpc_requests_total{kind="message",outcome="ok",pattern="echo",transport="nats"}'
    async with relay(server, hold=lambda held: False, cut=lambda written: b"gone" in written, deaf=deaf) as url:
        env = {"DATABASE_URL": db_url, "BOOKING_RPC_SHUTDOWN_TIMEOUT": "5", "BOOKING_RPC_NATS_URL": url}
        service = await asyncio.to_thread(start_service, env)  # the relay runs on this loop meanwhile
        peer = await nats.connect(server.url)
        try:
            async with asyncio.timeout(15):
                while (await asyncio.to_thread(http_get, service.metrics_port, "/readyz"))[1] != (
                    "ready\nnats: connected\n"
                ):
                    await asyncio.sleep(0.05)
            deaf.set()
            for i in range(40):  # 40 MB of replies: more than the sockets on the way hold
                body = orjson.dumps({"pattern": "echo", "data": "x" * 1_000_000, "id": i})
                await peer.publish("echo", body, reply=peer.new_inbox())
            async with asyncio.timeout(30):
                while await asyncio.to_thread(service.metric, echo_ok) != 40:
                    await asyncio.sleep(0.1)
            await peer.publish(
                "echo", orjson.dumps({"pattern": "echo", "data": "gone", "id": "last"}), reply="_INBOX.x"
            )
            await peer.flush()
            await asyncio.sleep(1.0)  # the relay's EOF reaches the service: it reconnects
            service.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.process.wait, 20) == 0, service.log[-3:]
            await wait_for(lambda: any(entry.get("event") == "stopped" for entry in service.log))
        finally:
            await peer.close()
            service.stop()


async def test_a_cancelled_drain_still_stops_health_the_jobs_and_the_relay(db_url: str) -> None:
    """An embedder's timeout (a bench's, a test's) cancels the app while its TCP drain waits for a request (held
    behind a table lock): the drain is cut short, and health, the jobs and the relay still stop before the
    cancellation goes on (it had skipped all three, their listener and Tasks left running)."""
    settings = Settings(port=0, metrics_port=0, database_url=SecretStr(db_url), shutdown_timeout=30)
    locker = await asyncpg.connect(db_url)
    lock = locker.transaction()
    await lock.start()
    await locker.execute("LOCK TABLE services IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as deadline, running_app(settings, migrate_first=False) as app:
                health, relay, jobs = app.ctx.extras["health"], app.ctx.extras["relay"], app.ctx.extras["jobs"]
                health_port = health.port
                client = await Client.connect("127.0.0.1", app.server.port)
                finding = asyncio.create_task(
                    client.send("booking.services.find", {"actor": admin(), "clinic_id": str(uuid.uuid4())})
                )
                await wait_for(lambda: app.server.in_flight() == 1, 10)
                deadline.reschedule(asyncio.get_running_loop().time() + 0.5)  # in the drain
        assert jobs.tasks == []
        assert relay._manager.done() and relay._keeper.done() and not relay.loops
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", health_port)
    finally:
        await lock.rollback()
        await locker.close()
    with contextlib.suppress(Exception):
        await finding
    await client.close()


async def test_nats_login_right_serves_wrong_stops_the_start(
    db_url: str, nats_server_factory: Callable[..., NatsServer]
) -> None:
    broker = nats_server_factory(user="booking", password="right-pw")
    env = {
        "DATABASE_URL": db_url,
        "BOOKING_RPC_NATS_URL": broker.url,
        "BOOKING_RPC_NATS_USER": "booking",
        "BOOKING_RPC_EVENTS_NATS": "true",
        "BOOKING_RPC_LOG_FORMAT": "json",
        "BOOKING_RPC_PORT": "0",
        "BOOKING_RPC_METRICS_PORT": "0",
    }
    for workers in ("1", "2"):  # the one process, or the supervisor saying what its workers met
        wrong = {**env, "BOOKING_RPC_NATS_PASSWORD": "wrong-pw", "BOOKING_RPC_WORKERS": workers}
        done = await asyncio.to_thread(run_cli, "serve", env=wrong)
        line = failed_start(done)
        assert line.startswith("booking-rpc: the NATS server refused the credentials (authorization violation); ")
        assert "wrong-pw" not in done.stderr
    with running_service(db_url, **{**env, "BOOKING_RPC_NATS_PASSWORD": "right-pw"}) as service:
        async with asyncio.timeout(15):
            while http_get(service.metrics_port, "/readyz")[1] != "ready\nnats: connected\njetstream: connected\n":
                await asyncio.sleep(0.05)
        nc = await nats.connect(broker.url, user="booking", password="right-pw")
        try:
            reply = await nc.request("ping", b'{"pattern":"ping","data":{},"id":"1"}', timeout=5)
        finally:
            await nc.close()
        assert reply.data == b'{"response":"pong","isDisposed":true,"id":"1"}'
        assert "right-pw" not in "".join(json.dumps(entry) for entry in service.log)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "booking_rpc", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_setting_stops_the_start_naming_the_variable() -> None:
    done = run_cli("serve", env={"BOOKING_RPC_PORT": "not-a-port", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert done.returncode == 2
    assert "BOOKING_RPC_PORT" in done.stderr


def test_a_pool_that_keeps_no_connection_is_refused() -> None:
    done = run_cli("config", env={"BOOKING_RPC_DB_POOL_MIN_SIZE": "0", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert done.returncode == 2
    assert "BOOKING_RPC_DB_POOL_MIN_SIZE" in done.stderr


def failed_start(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a start that cannot go on prints, after checking that nothing was logged as an error."""
    assert done.returncode == 2, done.stderr
    plain, logged = [], []
    for line in done.stderr.splitlines():
        try:
            logged.append(json.loads(line))
        except ValueError:
            plain.append(line)
    assert [e for e in logged if e.get("level") not in ("debug", "info")] == []
    assert len(plain) == 1, done.stderr  # no traceback, no second message
    assert done.stdout == ""
    return plain[0]


def test_unreachable_database_exits_with_a_clear_message() -> None:
    done = run_cli(
        "serve",
        "--port",
        "0",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing", "BOOKING_RPC_LOG_FORMAT": "json"},
    )
    assert failed_start(done).startswith("booking-rpc: cannot reach PostgreSQL at host=127.0.0.1 port=1 ")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("BOOKING_RPC_PORT", "--port or BOOKING_RPC_PORT"),
        ("BOOKING_RPC_MSGPACK_PORT", "--msgpack-port or BOOKING_RPC_MSGPACK_PORT"),
        ("BOOKING_RPC_METRICS_PORT", "BOOKING_RPC_METRICS_PORT (or turn metrics off"),
    ],
)
def test_a_port_in_use_stops_the_start_with_one_line(db_url: str, taken_port: int, variable: str, setting: str) -> None:
    ports = {"BOOKING_RPC_PORT": "0", "BOOKING_RPC_MSGPACK_PORT": "0", "BOOKING_RPC_METRICS_PORT": "0"}
    env = {**ports, variable: str(taken_port), "DATABASE_URL": db_url, "BOOKING_RPC_LOG_FORMAT": "json"}
    done = run_cli("serve", env=env)
    message = f"booking-rpc: port {taken_port} on 127.0.0.1 is in use; choose another with {setting}"
    assert failed_start(done).startswith(message)
    # nothing was started that had to be stopped: no relay, no job ran
    assert "outbox relay started" not in done.stderr and "job" not in done.stderr


def test_config_masks_the_database_password() -> None:
    done = run_cli("config", env={"DATABASE_URL": "postgresql://u:s3cret@db:5432/b"})
    assert done.returncode == 0
    assert "s3cret" not in done.stdout and "DATABASE_URL=********  # env" in done.stdout
    assert "BOOKING_RPC_HOLD_TTL_SECONDS=600  # default" in done.stdout


def test_config_masks_nats_passwords() -> None:
    done = run_cli("config", env={"BOOKING_RPC_NATS_URL": "nats://svc:pw1@n1:4222, nats://n2:4222"})
    assert done.returncode == 0
    assert "BOOKING_RPC_NATS_URL=nats://svc:***@n1:4222,nats://n2:4222  # env" in done.stdout


def test_config_shows_tracing() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "key=s3cret"}
    done = run_cli("config", env=env)
    assert done.returncode == 0
    assert "# tracing: on, exporters otlp (http/protobuf for otlp)" in done.stdout
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318  # env" in done.stdout
    assert "s3cret" not in done.stdout


def test_events_on_nats_without_a_nats_url_is_refused() -> None:
    done = run_cli("config", env={"BOOKING_RPC_EVENTS_NATS": "true", "BOOKING_RPC_NATS_URL": ""})
    assert done.returncode == 2
    assert "BOOKING_RPC_EVENTS_NATS=true needs BOOKING_RPC_NATS_URL" in done.stderr


def test_freeze_startup_heap_collects_garbage_then_leaves_full_collections_nothing_to_walk() -> None:
    """In a process of its own (it freezes that process's heap for good): what starting made is frozen, its
    garbage collected first, and a full collection afterwards walks only what was made since."""
    script = """
import gc, weakref
from booking_rpc import app

class Node:
    pass

garbage = Node(); garbage.me = garbage; dead = weakref.ref(garbage); del garbage
live = [{"n": i} for i in range(1000)]
app.freeze_startup_heap()
assert dead() is None, "a startup cycle was frozen instead of collected"
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
made_since = [[i] for i in range(10)]
tracked = len(gc.get_objects())
assert tracked < 100, tracked
print("ok", gc.get_freeze_count(), tracked)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
