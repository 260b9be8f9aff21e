"""`serve --workers N`: one supervisor, N worker processes on one port (uvicorn's model, gunicorn 27's sockets).

The supervisor does what must happen once per host: it starts the embedded PostgreSQL (when DATABASE_URL is
unset), applies migrations (several hosts serialise on the migration advisory lock), and resolves the ports
(port 0 becomes one free port, held by a bound, never-listening SO_REUSEPORT socket so that a replacement
worker always gets it back). Each worker then runs the whole service (`app.serve`) with its own listener on
that port (SO_REUSEPORT: the kernel spreads *connections* over the workers), its own pool, jobs and relay
(each safe with several replicas: advisory locks and SKIP LOCKED), and every other setting unchanged.

A worker that dies is logged and replaced; one that fails before it was ever ready stops the start.
SIGTERM/SIGINT: every worker drains (stop accepting, finish in-flight, flush replies), then the database
stops; a second signal kills the workers and exits at once. Workers run in their own process group, so a
terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM.

Metrics: the supervisor serves /metrics on BOOKING_RPC_METRICS_PORT as the sum over its workers (each worker
serves its own on a free port, logged). A dead worker's counters are kept at their last scraped value, so
no counter of the sum goes backwards when a worker is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_exit
from multiprocessing.process import BaseProcess
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from booking_rpc.app import App, StartupError, open_database, serve, sql_folder
from booking_rpc.config import Settings
from booking_rpc.db.migrations import migrate_dsn
from booking_rpc.health import HealthServer
from booking_rpc.logging import configure_logging
from booking_rpc.loop import run

log = structlog.get_logger(__name__)

WATCH_INTERVAL = 0.2
READY_TIMEOUT = 120.0  # a worker opens its pool and starts its listeners within this
SCRAPE_TIMEOUT = 2.0
RESTART_BACKOFF_MAX = 30.0
# Gauges of one shared thing (the outbox, the replica's lag), each worker's reading of it: the sum shows the
# largest reading, not N times the figure.
SHARED_GAUGES = frozenset(
    {
        "booking_rpc_outbox_pending",
        "booking_rpc_outbox_oldest_age_seconds",
        "booking_rpc_outbox_dead",
        "booking_rpc_read_replica_lag_seconds",
    }
)
CUMULATIVE = frozenset({"counter", "histogram", "summary"})


class SupervisorError(Exception):
    """The workers could not be started; the message says why."""


# --- ports


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) a SO_REUSEPORT socket: resolves port 0 and keeps the port ours between workers."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise SupervisorError("--workers > 1 needs SO_REUSEPORT (Linux); run one process per port instead")
    address = "127.0.0.1" if host == "localhost" else host
    family, kind, proto, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise SupervisorError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


# --- one worker


def _worker_main(settings: Settings, index: int, link: Connection) -> None:
    """A worker process: the whole service on the shared port, until SIGTERM or the supervisor is gone."""
    os.setpgrp()  # Ctrl-C on a terminal goes to the supervisor alone; it forwards SIGTERM
    structlog.contextvars.bind_contextvars(worker=index)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def supervisor_gone() -> None:
            loop.remove_reader(link.fileno())
            stop.set()

        # The supervisor never writes: the link turns readable (EOF) only when it exits, even by kill -9.
        loop.add_reader(link.fileno(), supervisor_gone)

        def ready(app: App) -> None:
            link.send(("ready", app.ctx.extras["health"].port if "health" in app.ctx.extras else None))

        await serve(settings, migrate_first=False, signals=(signal.SIGTERM,), stop=stop, on_ready=ready)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run(main())
    except StartupError as exc:  # the operator's to fix (NATS refused the credentials, ...): the supervisor says it
        link.send(("failed", str(exc)))
        sys.exit(2)


@dataclass
class Worker:
    index: int
    process: BaseProcess
    link: Connection
    started_at: float
    ready: bool = False
    metrics_port: int | None = None
    failure: str = ""  # why it could not start, when it said so
    last_metrics: list[Metric] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


# --- metrics: the sum over workers


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def add_samples(into: dict[str, tuple[Metric, dict[Any, float]]], families: list[Metric], *, gauges: bool) -> None:
    for family in families:
        if family.type not in CUMULATIVE and not gauges:
            continue
        _, values = into.setdefault(family.name, (Metric(family.name, family.documentation, family.type), {}))
        for sample in family.samples:
            key = (sample.name, _key(sample.labels))
            if family.name in SHARED_GAUGES:
                values[key] = max(values.get(key, sample.value), sample.value)
            else:
                values[key] = values.get(key, 0.0) + sample.value


def render_sum(families: dict[str, tuple[Metric, dict[Any, float]]]) -> bytes:
    class Fixed:
        def collect(self) -> list[Metric]:
            out = []
            for shell, values in families.values():
                metric = Metric(shell.name, shell.documentation, shell.type)
                for (name, labels), value in sorted(values.items()):
                    metric.add_sample(name, dict(labels), value)
                out.append(metric)
            return out

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    data: bytes = generate_latest(registry)
    return data


async def http_get(port: int, path: str, timeout: float = SCRAPE_TIMEOUT) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# --- the supervisor


class Supervisor:
    def __init__(self, settings: Settings, worker_settings: Settings) -> None:
        self.settings = settings
        self.worker_settings = worker_settings
        self.spawn = multiprocessing.get_context("spawn")
        self.workers: list[Worker | None] = [None] * settings.workers
        self.failures = [0] * settings.workers
        self.next_start = [0.0] * settings.workers
        self.retired: dict[str, tuple[Metric, dict[Any, float]]] = {}
        self.restarts = 0
        self.stopping = False

    def _start(self, index: int) -> Worker:
        parent, child = multiprocessing.Pipe()  # a socket pair: EOF is readable on both ends
        process = self.spawn.Process(
            target=_worker_main, args=(self.worker_settings, index, child), name=f"booking-rpc-worker-{index}"
        )
        process.start()
        child.close()
        worker = Worker(index, process, parent, asyncio.get_running_loop().time())
        self.workers[index] = worker
        log.info("worker started", worker=index, pid=worker.pid)
        return worker

    def _read_link(self, worker: Worker) -> None:
        with contextlib.suppress(EOFError, OSError):
            while worker.link.poll():
                kind, metrics_port = worker.link.recv()
                if kind == "failed":
                    worker.failure = str(metrics_port)
                elif kind == "ready":
                    worker.ready, worker.metrics_port = True, metrics_port
                    self.failures[worker.index] = 0
                    log.info("worker ready", worker=worker.index, pid=worker.pid, metrics_port=metrics_port)

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w is not None and w.process.is_alive()]

    async def start_all(self) -> None:
        for index in range(len(self.workers)):
            self._start(index)
        loop = asyncio.get_running_loop()
        end = loop.time() + READY_TIMEOUT
        while True:
            for worker in self.workers:
                assert worker is not None
                self._read_link(worker)
                if not worker.ready and not worker.process.is_alive():
                    self._read_link(worker)  # what it said before it exited
                    raise SupervisorError(
                        worker.failure or f"worker {worker.index} exited during start (code {worker.process.exitcode})"
                    )
            if all(w is not None and w.ready for w in self.workers):
                return
            if loop.time() > end:
                raise SupervisorError(f"workers not ready after {READY_TIMEOUT:.0f}s")
            await asyncio.sleep(WATCH_INTERVAL)

    def _retire(self, worker: Worker) -> None:
        add_samples(self.retired, worker.last_metrics, gauges=False)
        worker.link.close()
        worker.process.join(0)

    async def watch(self, stop: asyncio.Event) -> None:
        """Replace dead workers (backing off when a replacement keeps dying before it is ready) until `stop`."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for index, worker in enumerate(self.workers):
                if worker is not None:
                    self._read_link(worker)
                    if worker.process.is_alive():
                        continue
                    log.warning(
                        "worker died; replacing it", worker=index, pid=worker.pid, exitcode=worker.process.exitcode
                    )
                    if not worker.ready:
                        self.failures[index] += 1
                    self._retire(worker)
                    self.workers[index] = None
                    self.restarts += 1
                    delay = min(RESTART_BACKOFF_MAX, 0.5 * 2 ** self.failures[index]) if self.failures[index] else 0.0
                    self.next_start[index] = loop.time() + delay
                if loop.time() >= self.next_start[index]:
                    replacement = self._start(index)
                    log.info("worker replaced", worker=index, pid=replacement.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)

    async def drain(self, deadline: float) -> None:
        """SIGTERM every worker; wait until they have drained (SIGKILL what is left after `deadline`)."""
        self.stopping = True
        for worker in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while (left := self.alive()) and (remaining := end - loop.time()) > 0:
            await asyncio.to_thread(wait_for_exit, [w.process.sentinel for w in left], remaining)
        for late in self.alive():
            log.warning("worker did not drain in time; killing it", worker=late.index, pid=late.pid)
            late.process.kill()
        for gone in self.workers:
            if gone is not None:
                gone.process.join(5)
                gone.link.close()

    def kill_all(self) -> None:
        for worker in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    # --- HTTP: the sum of the workers' metrics, health, readiness

    async def _scrape(self, worker: Worker) -> None:
        if worker.metrics_port is None:
            return
        try:
            status, body = await http_get(worker.metrics_port, "/metrics")
        except (OSError, TimeoutError):
            return  # keep its last figures: a slow scrape must not make the sum go down
        if status == 200:
            worker.last_metrics = list(text_string_to_metric_families(body.decode()))

    async def metrics(self) -> bytes:
        live = [w for w in self.alive() if w.ready]
        await asyncio.gather(*(self._scrape(w) for w in live))
        total: dict[str, tuple[Metric, dict[Any, float]]] = {}
        for name, (shell, values) in self.retired.items():
            total[name] = (shell, dict(values))
        for worker in live:
            add_samples(total, worker.last_metrics, gauges=True)
        workers = Metric("booking_rpc_workers", "Worker processes alive and ready", "gauge")
        workers.add_sample("booking_rpc_workers", {}, float(len(live)))
        restarts = Metric("booking_rpc_worker_restarts", "Workers that died and were replaced", "counter")
        restarts.add_sample("booking_rpc_worker_restarts_total", {}, float(self.restarts))
        add_samples(total, [workers, restarts], gauges=True)
        return render_sum(total)

    async def ready(self) -> bool:
        async def one(worker: Worker) -> bool:
            if worker.metrics_port is None:
                return True
            with contextlib.suppress(OSError, TimeoutError):
                return (await http_get(worker.metrics_port, "/readyz"))[0] == 200
            return False

        live = [w for w in self.alive() if w.ready]
        return not self.stopping and any(await asyncio.gather(*(one(w) for w in live)))

    def routes(self) -> dict[str, Any]:
        async def metrics() -> tuple[int, bytes, str]:
            return 200, await self.metrics(), CONTENT_TYPE_LATEST

        async def healthz() -> tuple[int, bytes, str]:
            return 200, b"ok\n", "text/plain"

        async def readyz() -> tuple[int, bytes, str]:
            if await self.ready():
                return 200, b"ready\n", "text/plain"
            return 503, b"no worker ready\n", "text/plain"

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}


async def supervise(settings: Settings, *, migrate_first: bool = True) -> None:
    """Run `settings.workers` workers until SIGTERM/SIGINT; the first signal drains, a second exits at once."""
    configure_logging(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    supervisor: Supervisor | None = None

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: killing the workers and exiting now")
            if supervisor is not None:
                supervisor.kill_all()
            os._exit(130)
        log.info("shutting down: every worker finishes its in-flight requests", deadline_s=settings.shutdown_timeout)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    reserved: list[socket.socket] = []
    database = await open_database(settings)
    try:
        if migrate_first:
            applied = await migrate_dsn(database.dsn, sql_folder(settings) / "migrations")
            if applied:
                log.info("migrations applied", applied=applied)
        reserved.append(reserve_port(settings.host, settings.port))
        port = reserved[0].getsockname()[1]
        msgpack_port = 0
        if settings.msgpack_port:
            reserved.append(reserve_port(settings.host, settings.msgpack_port))
            msgpack_port = reserved[1].getsockname()[1]
        worker_settings = settings.model_copy(
            update={
                "port": port,
                "msgpack_port": msgpack_port,
                "database_url": SecretStr(database.dsn),
                "metrics_port": 0,
            }
        )
        supervisor = Supervisor(settings, worker_settings)
        health = None
        try:
            await supervisor.start_all()
            if settings.metrics_enabled:
                health = HealthServer(settings.metrics_host, settings.metrics_port, supervisor.routes())
                await health.start()
            log.info(
                "supervisor ready",
                host=settings.host,
                port=port,
                msgpack_port=msgpack_port or None,
                metrics_port=health.port if health else None,
                workers=[w.pid for w in supervisor.workers if w is not None],
            )
            await supervisor.watch(stop)
        finally:
            await supervisor.drain(settings.shutdown_timeout + 5.0)
            if health is not None:
                await health.stop()
    finally:
        for sock in reserved:
            sock.close()
        await asyncio.to_thread(database.stop)
    log.info("stopped")
