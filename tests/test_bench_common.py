"""bench/common.py's pieces every bench shares."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from bench.common import INSTALLED_LOCK_STAMP, alternating, ensure_node_modules


def test_rounds_alternate_who_goes_first() -> None:
    orders = [alternating(("rpc", "pg"), r) for r in range(4)]
    assert orders == [["rpc", "pg"], ["pg", "rpc"], ["rpc", "pg"], ["pg", "rpc"]]
    assert alternating(["a", "b", "c"], 1) == ["c", "b", "a"]


def test_node_modules_are_installed_again_only_when_the_lock_changes(tmp_path: Path) -> None:
    # a package without dependencies: npm ci runs offline in a second
    package = {"name": "stamp-check", "version": "1.0.0", "lockfileVersion": 3, "requires": True}
    (tmp_path / "package.json").write_bytes(orjson.dumps({"name": "stamp-check", "version": "1.0.0"}))
    lock = tmp_path / "package-lock.json"
    lock.write_bytes(orjson.dumps({**package, "packages": {"": {"name": "stamp-check", "version": "1.0.0"}}}))
    ensure_node_modules(tmp_path)
    marker = tmp_path / "node_modules" / "marker"  # npm ci empties node_modules: the marker shows whether it ran
    marker.touch()

    # a fresh checkout: the same lock, newer than the install
    os.utime(lock, (time.time() + 60, time.time() + 60))
    ensure_node_modules(tmp_path)
    assert marker.exists()

    lock.write_bytes(orjson.dumps({**package, "packages": {"": {"name": "stamp-check", "version": "1.0.0"}}}) + b"\n")
    ensure_node_modules(tmp_path)
    assert not marker.exists()
    ensure_node_modules(tmp_path)
    assert (tmp_path / "node_modules" / INSTALLED_LOCK_STAMP).exists()
