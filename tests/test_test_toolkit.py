"""The test toolkit's own rules: test files share helpers only through it, and its capacity invariant is the
domain's rule (booking_states.ACTIVE) rather than a list of its own."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.domain.booking_states import ACTIVE, STATUSES
from tests.helpers import capacity_violations, insert_booking, make_service, make_slot

TESTS = Path(__file__).resolve().parent
TOOLKIT = ("tests.helpers", "tests.fixtures")


def imported_test_modules(source: str) -> list[str]:
    """The `tests.*` modules a file imports that are not the toolkit (tests/helpers.py, tests/fixtures/)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "tests" else [f"tests.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [f"(relative) {node.module or ''}"]
        for name in names:
            if name.startswith("(relative)") or (
                (name == "tests" or name.startswith("tests."))
                and not any(name == t or name.startswith(t + ".") for t in TOOLKIT)
            ):
                found.append(name)
    return found


def test_the_check_catches_each_form_of_import() -> None:
    src = (
        "from tests.handlers.test_reservations import call\n"
        "import tests.jobs.test_expiry\n"
        "from tests import conftest\n"
        "from .test_slots import x\n"
        "from tests.helpers import call\n"
        "from tests.fixtures.interop import nest_client\n"
    )
    assert imported_test_modules(src) == [
        "tests.handlers.test_reservations",
        "tests.jobs.test_expiry",
        "tests.conftest",
        "(relative) test_slots",
    ]


def test_no_test_file_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): bad
        for path in sorted(TESTS.rglob("*.py"))
        if "node_modules" not in path.parts and (bad := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "import helpers from tests/helpers.py or tests/fixtures/, not from test files"


async def test_capacity_invariant_counts_exactly_the_active_statuses(app_ctx: Context, pool: Pool) -> None:
    """A booking holding a slot's unit satisfies the invariant iff its status is one the domain says holds one."""
    cat = await make_service(app_ctx)
    for day, status in enumerate(STATUSES, start=2):
        slot = await make_slot(pool, cat.service_id, starts_in=dt.timedelta(days=day))
        await insert_booking(pool, cat, slot, status)  # takes the slot's unit, whatever the status
        async with pool.acquire() as conn:
            flagged = {v["id"] for v in await capacity_violations(conn)}
        assert (slot in flagged) == (status not in ACTIVE), status
