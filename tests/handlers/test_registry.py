"""docs/architecture.md names each pattern's handler module, and it is the module the router really uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from booking_rpc.handlers import build_router

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
ROW = re.compile(r"^\| `([^`]+)` \| (message|event) \| (handlers/\S+\.py) \|$", re.M)


def test_the_pattern_table_matches_the_router() -> None:
    documented = {m[1]: (m[2], m[3]) for m in ROW.finditer(DOC.read_text(encoding="utf-8"))}
    served = {
        pattern: (route.kind, route.handler.__module__.removeprefix("booking_rpc.").replace(".", "/") + ".py")
        for pattern, route in build_router().routes.items()
    }
    assert documented == served


def test_no_handler_module_imports_another_ones_private_names() -> None:
    handlers = Path(__file__).resolve().parents[2] / "booking_rpc" / "handlers"
    offenders = [
        f"{path.relative_to(handlers)}: {node.module}.{alias.name}"
        for path in sorted(handlers.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("booking_rpc.handlers")
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert offenders == []
