"""The real NestJS 12 peers: `npm ci` once per session (the helpers that run them: tests/fixtures/interop.py).

These tests need Node.js ≥ 20 and npm (they install @nestjs/microservices 12 from the npm registry into
tests/interop/node_modules). Without them the tests fail with a clear message; they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def harness(node_harness: Path) -> Iterator[Path]:
    yield node_harness
