"""The embedded PostgreSQL: starts in an empty folder, answers, stops, and keeps its data across restarts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from booking_rpc.db.embedded import default_data_dir, start_embedded


async def query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A folder of our own, not under pytest's basetemp: every pytest session that starts on this machine
    (other engineers' too) resets /tmp/pytest-of-<user> to 0700, which locks the server's own user out."""
    path = Path(tempfile.mkdtemp(prefix="booking-rpc-pg-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_start_answer_stop_and_restart_reuses_data(data_dir: Path) -> None:
    first = start_embedded(data_dir)
    try:
        assert asyncio.run(query(first.dsn, "SELECT 1")) == 1
        assert asyncio.run(query(first.dsn, "SELECT current_database()")) == "booking_rpc"
        asyncio.run(query(first.dsn, "CREATE TABLE kept AS SELECT 42 AS answer"))
    finally:
        first.stop()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        asyncio.run(query(first.dsn, "SELECT 1"))  # stopped: nothing listens any more

    second = start_embedded(data_dir)
    try:
        assert asyncio.run(query(second.dsn, "SELECT answer FROM kept")) == 42
        assert (data_dir / "postgres" / "PG_VERSION").is_file()
    finally:
        second.stop()


def test_default_data_dir_is_per_user() -> None:
    path = default_data_dir()
    assert path.is_absolute()
    assert path.name == "booking-rpc"


def test_first_start_says_it_is_creating_the_database_and_when_it_is_ready(data_dir: Path) -> None:
    def migrate() -> tuple[str, list[dict[str, object]]]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"BOOKING_RPC_LOG_FORMAT": "json"}
        done = subprocess.run(
            [sys.executable, "-m", "booking_rpc", "migrate", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, [json.loads(line) for line in done.stderr.splitlines()]  # stderr: log lines only

    pgdata = str((data_dir / "postgres").resolve())
    stdout, logged = migrate()
    events = [entry["event"] for entry in logged]
    assert events.index("database.embedded.creating") < events.index("database.embedded.ready")
    assert logged[events.index("database.embedded.creating")]["data_dir"] == pgdata
    assert logged[events.index("database.embedded.ready")]["created"] is True
    assert stdout.splitlines()[0].startswith("0001_")  # stdout: the applied migrations, no log line

    stdout, logged = migrate()  # a restart creates nothing
    events = [entry["event"] for entry in logged]
    assert "database.embedded.creating" not in events
    assert logged[events.index("database.embedded.ready")]["created"] is False
    assert stdout == "nothing to apply\n"
