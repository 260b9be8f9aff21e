"""What the benches share: percentiles, CPU time of a process, starting servers that print their port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from booking_rpc.db.queries import Queries

# Statements only the benches (and the tests' bulk fixtures) run, apart from the service's: bench/sql/.
BENCH_SQL = Queries.load(Path(__file__).with_name("sql"))

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "interop"
INSTALLED_LOCK_STAMP = ".booking-rpc-lock-sha256"  # in node_modules: the sha256 of the lock npm ci installed
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


T = TypeVar("T")


def alternating(items: Sequence[T], round_index: int) -> list[T]:
    """`items` in their order on even rounds, reversed on odd ones (0-based): the benches interleave what they
    compare round by round, alternating who goes first, so drift in the shared machine hits every side."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: [0] state, [1] ppid, [11:15] utime stime cutime cstime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    return sum(int(x) for x in _stat(pid)[11:15]) / CLOCK_TICKS


def read_calls(pid: int) -> int:
    """Read system calls a process has made (/proc/<pid>/io `syscr`): a server's socket reads, one per wake-up."""
    return _io_count(pid, "syscr")


def write_calls(pid: int) -> int:
    """Write system calls a process has made (/proc/<pid>/io `syscw`): a server's socket writes."""
    return _io_count(pid, "syscw")


def _io_count(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/io")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, its reaped children and its live children: a PostgreSQL server's whole CPU.

    A postmaster reaps its backends, so the CPU of those that exited (pgbench's, at the end of its run) is
    in its cutime/cstime, and that of the live ones (a pool's) is read from each.
    """
    total = cpu_seconds(pid)
    for child in children_of(pid):
        with contextlib.suppress(OSError):  # exited while we looked
            total += sum(int(x) for x in _stat(child)[11:13]) / CLOCK_TICKS
    return total


def database_backends_cpu(postmaster: int, database: str) -> dict[int, float]:
    """CPU seconds of each live PostgreSQL backend connected to `database` (a backend's process title names
    it: "postgres: [cluster:] user database host(port) state"): on a server other work shares, only a
    bench's own database's."""
    found = {}
    for child in children_of(postmaster):
        with contextlib.suppress(OSError):  # exited while we looked
            title = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if database in title.split()[1:4]:  # after "postgres:" and maybe a "15/main:" cluster name
                found[child] = sum(int(x) for x in _stat(child)[11:13]) / CLOCK_TICKS
    return found


def backends_cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU the backends spent between two `database_backends_cpu` readings: those alive at the second
    (a new one from zero). A pool closing an idle connection takes its backend's past CPU with it; counting
    only the survivors loses no work of the window but that connection's last moments."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):  # exited while we looked
            if parent_of(int(stat.parent.name)) == pid:
                found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def database_on_own_cores(postmaster: int) -> Iterator[tuple[set[int], set[int]]]:
    """Pin a local PostgreSQL server to the upper half of this process's cores and this process (and what
    it starts from now on: the service, pgbench) to the lower half, as when the database has a host of its
    own; both sides of a comparison then get the same database capacity. Restores the affinities after.
    Yields (client cores, database cores).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("splitting cores needs at least 2")
    clients, database = set(cores[: len(cores) // 2]), set(cores[len(cores) // 2 :])
    server = [postmaster, *children_of(postmaster)]  # backends forked later inherit the postmaster's
    saved = {pid: os.sched_getaffinity(pid) for pid in server}
    own = os.sched_getaffinity(0)
    try:
        for pid in server:
            os.sched_setaffinity(pid, database)
        os.sched_setaffinity(0, clients)
        yield clients, database
    finally:
        os.sched_setaffinity(0, own)
        for pid in [postmaster, *children_of(postmaster)]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, saved.get(pid, saved[postmaster]))


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM (a server drains), then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_serve(env: dict[str, str], ready: Callable[[dict[str, Any]], bool]) -> subprocess.Popen[str]:
    """`booking-rpc serve --no-migrate` with `env` over ours and JSON logs, once `ready` has taken one of its
    log entries as the sign; its log is read on meanwhile (a full pipe would block it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "booking_rpc", "serve", "--no-migrate"],
        cwd=ROOT,
        env={**os.environ, "BOOKING_RPC_LOG_FORMAT": "json", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        with contextlib.suppress(ValueError):
            if ready(orjson.loads(line)):
                break
    else:
        raise RuntimeError("booking-rpc serve exited before it was ready")
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    return process


@dataclass
class Spawned:
    process: subprocess.Popen[bytes]
    info: dict[str, object]

    def stop(self) -> None:
        stop_process(self.process)


def spawn_printing_port(cmd: list[str], *, cwd: Path | None = None, timeout: float = 30.0) -> Spawned:
    """Start a server that prints one JSON line with its port first; return it with that line."""
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        try:
            info = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(info, dict) and "port" in info:
            return Spawned(process, info)
    process.kill()
    raise RuntimeError(f"{cmd[0]} did not print its port")


def ensure_node_modules(folder: Path = INTEROP) -> None:
    """`npm ci` in a folder of node scripts (tests/interop, bench/nest_peer) unless its lock is installed.

    The installed lock is known by its content, not by file times: a fresh checkout or git worktree has a lock
    newer than any install, and `npm ci` there replaced a node_modules linked from another checkout with an
    empty folder.
    """
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / INSTALLED_LOCK_STAMP
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=600)
    stamp.parent.mkdir(exist_ok=True)  # npm makes no node_modules for a lock without packages
    stamp.write_text(digest)


@dataclass
class NestSubscriber:
    process: asyncio.subprocess.Process
    port: int  # its TCP port (0 on NATS)
    # the events' `key` field -> when NestJS's handler ran (its CLOCK_MONOTONIC stamp: time.perf_counter here)
    received: dict[str, float] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def nest_subscriber(
    events: str, key: str, *, nats_url: str = "", queue: str = "nest"
) -> AsyncIterator[NestSubscriber]:
    """A genuine NestJS 12 microservice (tests/interop/nest_server.mjs) subscribed to `events`, over TCP or, with
    `nats_url`, ServerNats in `queue`; each event's handler time is recorded by its `data[key]`."""
    ensure_node_modules()
    where = ["--nats", nats_url, "--queue", queue] if nats_url else []
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(INTEROP / "nest_server.mjs"),
        "--port",
        "0",
        *where,
        "--events",
        events,
        "--stamp",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        sub = NestSubscriber(proc, int(orjson.loads(await proc.stdout.readline())["port"]))

        async def read() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    event = orjson.loads(line)
                    # when NestJS's handler ran (its stamp), not when this busy loop read the line
                    sub.received[event["data"][key]] = float(event["at"])

        reader = asyncio.create_task(read())
        try:
            yield sub
        finally:
            reader.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def write_json(path: Path | None, result: object) -> None:
    """A bench's `--json` output (nothing when no path was given)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
