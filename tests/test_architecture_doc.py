"""docs/architecture.md matches the tree: it names every module of booking_rpc/, and every module it names is
there (so a new module gets its line, and a removed or renamed one takes its line with it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
NAMED = re.compile(r"booking_rpc/[A-Za-z0-9_/]*(?:\.py\b|/)")


def modules() -> set[str]:
    """Every module of the package as the document names it: `booking_rpc/x.py`, a package as `booking_rpc/x/`."""
    found = set()
    for path in (ROOT / "booking_rpc").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        found.add(rel.removesuffix("__init__.py"))
    return found


def test_the_document_names_every_module() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(m for m in modules() if f"`{m}`" not in text)
    assert not missing, f"docs/architecture.md does not name {missing} (add each to its Modules section)"


def test_every_module_the_document_names_is_in_the_tree() -> None:
    named = set(NAMED.findall(DOC.read_text(encoding="utf-8")))
    gone = sorted(n for n in named if not (ROOT / n).exists())
    assert not gone, f"docs/architecture.md names {gone}, which the tree does not have"


def test_the_check_sees_a_missing_and_a_stale_module() -> None:
    assert "booking_rpc/wire/framing.py" in modules() and "booking_rpc/handlers/bookings/" in modules()
    assert NAMED.findall("see `booking_rpc/nowhere.py` and booking_rpc/gone/.") == [
        "booking_rpc/nowhere.py",
        "booking_rpc/gone/",
    ]
