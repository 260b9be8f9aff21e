"""Migrations: apply once, in order, refuse edits of applied files, serialise concurrent runs."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from booking_rpc.db.migrations import MigrationError, default_migrations_dir, migrate, migrate_dsn, pending


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), folder)
    return folder


async def test_applies_on_empty_database_and_is_idempotent(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        expected = sorted(p.name for p in default_migrations_dir().glob("*.sql"))
        assert await pending(conn) == expected
        assert await migrate(conn) == expected
        assert await migrate(conn) == []
        assert await pending(conn) == []

        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == expected
        first = default_migrations_dir() / "0001_schema.sql"
        assert rows[0]["version"] == 1
        assert rows[0]["checksum"] == hashlib.sha256(first.read_bytes()).hexdigest()
        assert rows[0]["applied_at"] is not None
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {
            "services",
            "slots",
            "reservations",
            "bookings",
            "payments",
            "booking_events_outbox",
        } <= tables
    finally:
        await conn.close()


async def test_edited_applied_migration_is_refused(empty_db_url: str, migrations_copy: Path) -> None:
    applied = await migrate_dsn(empty_db_url, migrations_copy)
    assert applied[0] == "0001_schema.sql" and applied == sorted(applied)
    target = migrations_copy / "0001_schema.sql"
    target.write_text(target.read_text() + "\n-- an innocent-looking edit\n")

    with pytest.raises(MigrationError, match=r"0001_schema\.sql was changed after it was applied"):
        await migrate_dsn(empty_db_url, migrations_copy)
    conn = await asyncpg.connect(empty_db_url)
    try:
        with pytest.raises(MigrationError, match=r"0001_schema\.sql"):
            await pending(conn, migrations_copy)
        # the lock was released despite the error: another session can take it at once
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", 0x626F6F6B696E67)
    finally:
        await conn.close()


async def test_new_file_applies_alone_and_failed_file_rolls_back(empty_db_url: str, migrations_copy: Path) -> None:
    await migrate_dsn(empty_db_url, migrations_copy)
    (migrations_copy / "0002_extra.sql").write_text("CREATE TABLE extra (id int PRIMARY KEY);\n")
    assert await migrate_dsn(empty_db_url, migrations_copy) == ["0002_extra.sql"]

    (migrations_copy / "0003_broken.sql").write_text("CREATE TABLE half (id int);\nSELECT no_such_column FROM extra;\n")
    with pytest.raises(MigrationError, match=r"0003_broken\.sql failed"):
        await migrate_dsn(empty_db_url, migrations_copy)
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None  # the whole file rolled back
        assert await pending(conn, migrations_copy) == ["0003_broken.sql"]
    finally:
        await conn.close()


@pytest.mark.parametrize("name", ["1_short.sql", "0002-dash.sql", "schema.sql"])
def test_badly_named_file_is_refused(migrations_copy: Path, name: str) -> None:
    from booking_rpc.db.migrations import discover

    (migrations_copy / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(migrations_copy)


def test_duplicate_version_is_refused(migrations_copy: Path) -> None:
    from booking_rpc.db.migrations import discover

    (migrations_copy / "0001_other.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="version 0001"):
        discover(migrations_copy)


async def test_concurrent_runs_both_succeed_and_apply_once(empty_db_url: str) -> None:
    results = await asyncio.gather(*(migrate_dsn(empty_db_url) for _ in range(3)))
    applied = [r for r in results if r]
    assert len(applied) == 1
    assert sorted(results, key=len) == [[], [], applied[0]]
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied[0])
    finally:
        await conn.close()
