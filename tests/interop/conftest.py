"""The real NestJS 12 peers: `npm ci` once per session (the helpers that run them: tests/fixtures/interop.py).

These tests need Node.js ≥ 20 and npm (they install @nestjs/microservices 12 from the npm registry into
tests/interop/node_modules). Without them the tests fail with a clear message; they never skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import ensure_node_modules

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def node_harness() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the interop tests need node and npm on PATH (Node.js >= 20)")
    ensure_node_modules(HERE)
    return HERE


@pytest.fixture
def harness(node_harness: Path) -> Iterator[Path]:
    yield node_harness
