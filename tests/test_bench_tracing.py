"""bench/tracing.py's check of what tracing off builds."""

from __future__ import annotations

from bench.tracing import off_path
from booking_rpc.db.queries import Queries


def test_tracing_off_is_found_to_build_no_tracing_middleware_and_untraced_connections() -> None:
    # the full run of 2026-12-02 02:03 printed "TRACED connections: NOT MET": the check still compared the
    # class with asyncpg.Connection after the pool's own became db.pool.ServiceConnection (64232e0)
    found = off_path(Queries.load())
    assert found["tracing_enabled"] is False
    assert found["tracing_middleware"] is False
    assert found["plain_connections"] is True
