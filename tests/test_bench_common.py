"""bench/common.py's pieces every bench shares."""

from __future__ import annotations

from bench.common import alternating


def test_rounds_alternate_who_goes_first() -> None:
    orders = [alternating(("rpc", "pg"), r) for r in range(4)]
    assert orders == [["rpc", "pg"], ["pg", "rpc"], ["rpc", "pg"], ["pg", "rpc"]]
    assert alternating(["a", "b", "c"], 1) == ["c", "b", "a"]
