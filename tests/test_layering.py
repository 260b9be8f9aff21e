"""Every layer imports only what is below it (docs/architecture.md), SQL text lives in sql/, and no two
modules import each other. The checker reads the source (AST), so a lazy import inside a function or one
under TYPE_CHECKING counts as much as one at the top; it is shown to fail on a tree that breaks each rule."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import booking_rpc


@dataclass(frozen=True)
class Rule:
    layer: str  # a module, or a package and everything in it
    forbidden: tuple[str, ...]  # modules (and their submodules) the layer must not import
    why: str


ABOVE_THE_TRANSPORT = ("booking_rpc.handlers", "booking_rpc.app", "booking_rpc.events", "booking_rpc.jobs")
NO_IO_NO_LAYER = (
    "asyncio",
    "asyncpg",
    "booking_rpc.db",
    "booking_rpc.context",
    "booking_rpc.router",
    "booking_rpc.server",
    "booking_rpc.wire",
    *ABOVE_THE_TRANSPORT,
)
RULES = (
    Rule(
        "booking_rpc.wire",
        (
            "asyncio",
            "socket",
            "selectors",
            "asyncpg",
            "booking_rpc.server",
            "booking_rpc.router",
            "booking_rpc.db",
            *ABOVE_THE_TRANSPORT,
        ),
        "the codec is sans-IO and knows no layer above it",
    ),
    Rule(
        "booking_rpc.server",
        ("asyncpg", "booking_rpc.db", "booking_rpc.context", *ABOVE_THE_TRANSPORT),
        "the transport hands messages to the router and knows nothing of what answers them",
    ),
    Rule(
        "booking_rpc.router",
        ("asyncpg", "booking_rpc.db", "booking_rpc.server", *ABOVE_THE_TRANSPORT),
        "error mappings of lower layers are registered on the router (Router.map_error), not imported",
    ),
    Rule(
        "booking_rpc.handlers",
        ("socket", "booking_rpc.server", "booking_rpc.wire", "booking_rpc.client", "booking_rpc.app"),
        "handlers never see sockets, frames or the transport",
    ),
    Rule(
        "booking_rpc.domain",
        NO_IO_NO_LAYER,
        "domain rules are pure: no IO, no layer",
    ),
    Rule(
        "booking_rpc.models",
        NO_IO_NO_LAYER,
        "payload and event models are plain data",
    ),
    Rule(
        "booking_rpc.db",
        ("booking_rpc.router", "booking_rpc.server", "booking_rpc.wire", "booking_rpc.context", *ABOVE_THE_TRANSPORT),
        "the database layer serves the layers above it",
    ),
    Rule(
        "booking_rpc.events",
        ("booking_rpc.server", "booking_rpc.handlers", "booking_rpc.app", "booking_rpc.jobs"),
        "the outbox and relay run beside the handlers, not through them",
    ),
    Rule(
        "booking_rpc.jobs",
        ("booking_rpc.server", "booking_rpc.wire", "booking_rpc.handlers", "booking_rpc.app"),
        "background jobs run SQL and write events, never through the transport",
    ),
    Rule(
        "booking_rpc.metrics",
        ("booking_rpc.handlers", "booking_rpc.db", "booking_rpc.server"),
        "metrics read the counters the composition root hands them",
    ),
)

# A string that starts like a statement (keywords in capitals, as sql/ writes them).
SQL_TEXT = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\s|CREATE\s|ALTER\s|DROP\s)"
)
# The database layer's own bookkeeping, which runs before any file of sql/ is read: the migrations table
# and its advisory lock, and creating the embedded server's database and the scratch databases.
SQL_ALLOWED = ("booking_rpc.db.migrations", "booking_rpc.db.embedded", "booking_rpc.db.scratch")


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, is_package: bool, tree: ast.Module) -> set[str]:
    """Every module a file imports, wherever the import stands; `from x import y` counts x and x.y."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node)
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(root: Path) -> tuple[list[str], set[str]]:
    """What breaks the rules in the package at `root`, and the modules scanned."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported = _imports(module, path.name == "__init__.py", tree)
        for rule in RULES:
            if _within(module, rule.layer):
                for name in sorted(imported):
                    if any(_within(name, banned) for banned in rule.forbidden):
                        problems.append(f"{module} imports {name}: {rule.why}")
        if module not in SQL_ALLOWED:
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.match(node.value):
                    problems.append(f"{module}:{node.lineno} holds SQL text: statements belong in sql/queries/")
        graph[module] = imported
    modules = set(graph)
    edges = {
        module: {name for name in imported if name in modules and name != module} for module, imported in graph.items()
    }
    problems.extend(f"import cycle: {' <-> '.join(group)}" for group in _cycles(edges))
    return problems, modules


def test_the_service_keeps_every_layer_rule() -> None:
    problems, modules = violations(Path(booking_rpc.__file__).parent)
    assert problems == []
    # each rule really saw its layer (a renamed package must not pass by matching nothing)
    for rule in RULES:
        assert any(_within(module, rule.layer) for module in modules), rule.layer
    assert "booking_rpc.server.protocol" in modules and "booking_rpc.handlers.system" in modules


def write_tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "booking_rpc"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return package


def test_the_checker_fails_on_each_forbidden_import(tmp_path: Path) -> None:
    package = write_tree(
        tmp_path,
        {
            "handlers/slots.py": "from booking_rpc.server.protocol import RpcProtocol\n",
            "handlers/bookings.py": "def f():\n    from ..wire import codec\n",
            "server/protocol.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from booking_rpc.handlers import slots\n",
            "router.py": "def lost(exc):\n    from booking_rpc.db.pool import is_connection_error\n",
            "wire/msgpack_codec.py": "import asyncio\nfrom booking_rpc.handlers.caches import CONSUMED\n",
            "metrics.py": "from booking_rpc.handlers.caches import CONSUMED\n",
            "domain/money.py": "import asyncpg\n",
            "handlers/caches.py": "FIND = '''\n    SELECT id FROM bookings WHERE id = $1'''\n",
            "events/relay.py": "import booking_rpc.jobs.runner\n",
            "jobs/runner.py": "import booking_rpc.events.relay\n",
        },
    )
    problems, _ = violations(package)
    assert problems == [
        "booking_rpc.domain.money imports asyncpg: domain rules are pure: no IO, no layer",
        "booking_rpc.events.relay imports booking_rpc.jobs.runner: "
        "the outbox and relay run beside the handlers, not through them",
        "booking_rpc.handlers.bookings imports booking_rpc.wire: handlers never see sockets, frames or the transport",
        "booking_rpc.handlers.bookings imports booking_rpc.wire.codec: "
        "handlers never see sockets, frames or the transport",
        "booking_rpc.handlers.caches:1 holds SQL text: statements belong in sql/queries/",
        "booking_rpc.handlers.slots imports booking_rpc.server.protocol: "
        "handlers never see sockets, frames or the transport",
        "booking_rpc.handlers.slots imports booking_rpc.server.protocol.RpcProtocol: "
        "handlers never see sockets, frames or the transport",
        "booking_rpc.metrics imports booking_rpc.handlers.caches: "
        "metrics read the counters the composition root hands them",
        "booking_rpc.metrics imports booking_rpc.handlers.caches.CONSUMED: "
        "metrics read the counters the composition root hands them",
        "booking_rpc.router imports booking_rpc.db.pool: "
        "error mappings of lower layers are registered on the router (Router.map_error), not imported",
        "booking_rpc.router imports booking_rpc.db.pool.is_connection_error: "
        "error mappings of lower layers are registered on the router (Router.map_error), not imported",
        "booking_rpc.server.protocol imports booking_rpc.handlers: "
        "the transport hands messages to the router and knows nothing of what answers them",
        "booking_rpc.server.protocol imports booking_rpc.handlers.slots: "
        "the transport hands messages to the router and knows nothing of what answers them",
        "booking_rpc.wire.msgpack_codec imports asyncio: the codec is sans-IO and knows no layer above it",
        "booking_rpc.wire.msgpack_codec imports booking_rpc.handlers.caches: "
        "the codec is sans-IO and knows no layer above it",
        "booking_rpc.wire.msgpack_codec imports booking_rpc.handlers.caches.CONSUMED: "
        "the codec is sans-IO and knows no layer above it",
        "import cycle: booking_rpc.events.relay <-> booking_rpc.jobs.runner",
        "import cycle: booking_rpc.handlers.slots <-> booking_rpc.server.protocol",
    ]


def test_the_checker_fails_when_the_real_tree_gains_a_forbidden_import(tmp_path: Path) -> None:
    source = Path(booking_rpc.__file__).parent
    files = {str(p.relative_to(source)): p.read_text(encoding="utf-8") for p in source.rglob("*.py")}
    files["handlers/system.py"] += "\nfrom booking_rpc.server.server import Server  # noqa\n"
    files["server/state.py"] += "\nfrom booking_rpc.server.server import Server  # noqa\n"
    problems, _ = violations(write_tree(tmp_path, files))
    assert problems == [
        "booking_rpc.handlers.system imports booking_rpc.server.server: "
        "handlers never see sockets, frames or the transport",
        "booking_rpc.handlers.system imports booking_rpc.server.server.Server: "
        "handlers never see sockets, frames or the transport",
        # the protocol <-> server cycle the state object removed, back again
        "import cycle: booking_rpc.server.protocol <-> booking_rpc.server.server <-> booking_rpc.server.state",
    ]
