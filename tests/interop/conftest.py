"""The real NestJS 12 peers: `npm ci` once per session, then client runs and server processes.

These tests need Node.js ≥ 20 and npm (they install @nestjs/microservices 12 from the npm registry into
tests/interop/node_modules). Without them the tests fail with a clear message; they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def node_harness() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the interop tests need node and npm on PATH (Node.js >= 20)")
    installed = HERE / "node_modules" / "@nestjs" / "microservices" / "package.json"
    lock = HERE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True, timeout=600)
    return HERE


async def nest_client(harness: Path, port: int, scenario: list[dict[str, Any]], *, msgpack: bool = False) -> list[Any]:
    """Run the scenario with the genuine NestJS ClientProxy; one result ({ok}|{error}) per op."""
    args = ["node", str(harness / "nest_client.mjs"), "--port", str(port)]
    if msgpack:
        args.append("--msgpack")
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(scenario).encode()), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    # the stdlib json module: results may hold lone surrogates, which orjson refuses
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


@dataclass
class NestServer:
    port: int
    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def wait_for_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                await asyncio.sleep(0.02)
        return self.events


@contextlib.asynccontextmanager
async def nest_server(harness: Path, events: list[str] | None = None) -> AsyncIterator[NestServer]:
    args = ["node", str(harness / "nest_server.mjs"), "--port", "0"]
    if events:
        args += ["--events", ",".join(events)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        server = NestServer(int(orjson.loads(line)["port"]), proc)

        async def read_events() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                with contextlib.suppress(orjson.JSONDecodeError):
                    server.events.append(orjson.loads(raw))

        server._reader = asyncio.create_task(read_events())
        yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
def harness(node_harness: Path) -> Iterator[Path]:
    yield node_harness
