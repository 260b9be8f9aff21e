"""booking_rpc/wire is sans-IO: it must never import asyncio, sockets or the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import booking_rpc.wire

FORBIDDEN = (
    "asyncio",
    "socket",
    "selectors",
    "booking_rpc.server",
    "booking_rpc.handlers",
    "booking_rpc.router",
)


def test_wire_imports_nothing_with_io_or_from_above() -> None:
    package = Path(booking_rpc.wire.__file__).parent
    imported: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert "orjson" in imported  # the scan really saw the modules
    assert not {name for name in imported if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN)}
