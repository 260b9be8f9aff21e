"""Migrations: apply once, in order, refuse edits of applied files, serialise concurrent runs; and none leaves a
stored generated column (slots.item_head) holding text its functions no longer write."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from booking_rpc.db.migrations import MigrationError, default_migrations_dir, discover, migrate, migrate_dsn, pending


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), folder)
    return folder


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """An empty migrations folder, for migrations applied one file at a time."""
    folder = tmp_path / "staging"
    folder.mkdir()
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
    (migrations_copy / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(migrations_copy)


def test_duplicate_version_is_refused(migrations_copy: Path) -> None:
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


# --- stored generated columns and the functions they read ---------------------------------------------
# A STORED generated column (slots.item_head, migrations 0045, 0049) keeps the text its expression gave when
# the row was last written. A migration that redefines a function the expression reads (CREATE OR REPLACE of
# booking_slot_item_head, or of booking_iso_instant, which it calls) without rebuilding the column (drop and
# add it, or SET EXPRESSION) leaves every existing row with the old text, and slots.find serves it. Two
# checks run the migrations one file at a time: one compares the functions' definitions (pg_proc) with those
# the column was last built under, whatever the new text gives; the other compares the stored values of
# slots written at the start with the expression recomputed, which also catches a file that rebuilds the
# column first and redefines a function after (the first check sees only each file's end).

# the stored generated columns, the pg_attrdef row of their expression (a new one whenever the column is
# rebuilt), the expression as SQL
_GENERATED_COLUMNS = """
SELECT a.attrelid::regclass::text AS table_name, quote_ident(a.attname) AS column_name, d.oid AS expression_oid,
       pg_get_expr(d.adbin, d.adrelid) AS expression
FROM pg_attribute a
JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attgenerated = 's' AND NOT a.attisdropped
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
ORDER BY 1, 2
"""
# the schema's own functions with what they call as pg_depend records it (a BEGIN ATOMIC body's callees); a
# body kept as text (LANGUAGE sql ... AS $$) has no such record, its calls are found in it by name
_FUNCTIONS = """
SELECT p.oid, p.oid::regprocedure::text AS signature, p.proname AS name, p.prosrc AS body,
       pg_get_functiondef(p.oid) AS definition,
       ARRAY(SELECT refobjid FROM pg_depend
             WHERE classid = 'pg_proc'::regclass AND objid = p.oid AND refclassid = 'pg_proc'::regclass) AS calls
FROM pg_proc p
WHERE p.prokind = 'f' AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
"""
_EXPRESSION_CALLS = """
SELECT refobjid FROM pg_depend
WHERE classid = 'pg_attrdef'::regclass AND objid = $1 AND refclassid = 'pg_proc'::regclass
"""


@dataclass(frozen=True)
class GeneratedColumn:
    name: str  # table.column
    expression_oid: int
    stale_rows: str  # SELECT the count of rows whose stored value is not what the expression gives now, of all
    functions: dict[str, str]  # signature -> definition, of every function the expression reads


async def generated_columns(conn: asyncpg.Connection) -> list[GeneratedColumn]:
    """Every stored generated column, with the definitions of the functions its expression reads, directly or
    through the functions those call."""
    functions = {r["oid"]: r for r in await conn.fetch(_FUNCTIONS)}
    by_name: dict[str, list[int]] = {}
    for oid, function in functions.items():
        by_name.setdefault(function["name"], []).append(oid)
    call = {name: re.compile(rf'(?<![\w$])"?{re.escape(name)}"?\s*\(', re.IGNORECASE) for name in by_name}
    found = []
    for column in await conn.fetch(_GENERATED_COLUMNS):
        todo = [r["refobjid"] for r in await conn.fetch(_EXPRESSION_CALLS, column["expression_oid"])]
        reads: set[int] = set()
        while todo:
            oid = todo.pop()
            if oid in reads or oid not in functions:  # PostgreSQL's own (to_char, to_json) never change
                continue
            reads.add(oid)
            function = functions[oid]
            todo += function["calls"]
            todo += [
                o for name, pattern in call.items() if pattern.search(function["body"] or "") for o in by_name[name]
            ]
        table, name = column["table_name"], column["column_name"]
        found.append(
            GeneratedColumn(
                f"{table}.{name}",
                column["expression_oid"],
                f"SELECT count(*) FILTER (WHERE {name} IS DISTINCT FROM ({column['expression']})), count(*) FROM {table}",
                {functions[o]["signature"]: functions[o]["definition"] for o in reads},
            )
        )
    return found


async def migrate_one_at_a_time(conn: asyncpg.Connection, source: Path, staging: Path) -> AsyncIterator[str]:
    """Apply `source`'s migrations with `migrate`, one file per step (copied into the empty folder `staging`
    for its step); yields each file's name once it is applied."""
    for migration in discover(source):
        shutil.copy(migration.path, staging / migration.name)
        assert await migrate(conn, staging) == [migration.name]
        yield migration.name


async def functions_redefined_after_their_column(dsn: str, source: Path, staging: Path) -> list[str]:
    """Each function a stored generated column reads that, after the last migration, is not defined as it was
    at the end of the migration that last built the column; one line each."""
    built: dict[str, tuple[GeneratedColumn, str]] = {}  # column -> (as built, by which migration)
    redefined_by: dict[tuple[str, str], str] = {}  # (column, function) -> the last migration that redefined it
    now: dict[str, GeneratedColumn] = {}
    conn = await asyncpg.connect(dsn)
    try:
        async for migration in migrate_one_at_a_time(conn, source, staging):
            before, now = now, {c.name: c for c in await generated_columns(conn)}
            for column in now.values():
                if column.name not in built or built[column.name][0].expression_oid != column.expression_oid:
                    built[column.name] = (column, migration)
                for signature, definition in column.functions.items():
                    if column.name in before and before[column.name].functions.get(signature) != definition:
                        redefined_by[column.name, signature] = migration
    finally:
        await conn.close()
    return [
        f"{name} was last built by {by}; {signature} was redefined after it by "
        f"{redefined_by.get((name, signature), by)}, which must rebuild {name} too"
        for name, (as_built, by) in built.items()
        if name in now
        for signature, definition in now[name].functions.items()
        if as_built.functions.get(signature) != definition
    ]


# slots as 0001 has them: instants whole and with fractions of a second, a staff member or none, times with
# fractions, a year of three digits, so a change of any part of the text shows in one of them
_SLOTS = [
    (None, "2030-01-01", "09:30", "10:00", "2030-01-01T09:30:00Z", "2030-01-01T10:00:00Z"),
    (
        uuid.UUID(int=7),
        "2028-02-29",
        "23:15:00.5",
        "23:59:59.999999",
        "2028-02-29T22:15:00.5Z",
        "2028-02-29T22:59:59.999999Z",
    ),
    (None, "0999-12-31", "00:00", "00:00:00.000001", "0999-12-31T00:00:00.12Z", "0999-12-31T00:00:00.120001Z"),
]


async def stored_values_unlike_their_expressions(dsn: str, source: Path, staging: Path) -> tuple[list[str], set[str]]:
    """Apply the migrations one at a time, with `_SLOTS` written as soon as a migration makes the slots table;
    after each migration, count the rows of each stored generated column whose value is not what its
    expression gives now. (One line per migration and column with such rows, the columns checked.)"""
    stale: list[str] = []
    checked: set[str] = set()
    conn = await asyncpg.connect(dsn)
    try:
        async for migration in migrate_one_at_a_time(conn, source, staging):
            if await conn.fetchval("SELECT to_regclass('slots') IS NULL"):
                continue
            if not await conn.fetchval("SELECT count(*) FROM slots"):
                service = await conn.fetchval(
                    "INSERT INTO services (clinic_id, name, price) VALUES (gen_random_uuid(), 'heads', 10) RETURNING id"
                )
                await conn.executemany(
                    "INSERT INTO slots (service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at,"
                    " ends_at) VALUES ($1, $2, $3::text::date, $4::text::time, $5::text::time,"
                    " $6::text::timestamptz, $7::text::timestamptz)",
                    [(service, *slot) for slot in _SLOTS],
                )
            for column in await generated_columns(conn):
                checked.add(column.name)
                rows, of = await conn.fetchrow(column.stale_rows)
                if rows:
                    stale.append(
                        f"after {migration}: {rows} of {of} {column.name} values are not what its expression gives now"
                    )
    finally:
        await conn.close()
    return stale, checked


async def test_no_function_a_stored_generated_column_reads_is_redefined_without_a_rebuild(
    empty_db_url: str, staging: Path
) -> None:
    assert await functions_redefined_after_their_column(empty_db_url, default_migrations_dir(), staging) == []


async def test_after_each_migration_every_stored_item_head_is_its_function_recomputed(
    empty_db_url: str, staging: Path
) -> None:
    stale, checked = await stored_values_unlike_their_expressions(empty_db_url, default_migrations_dir(), staging)
    assert stale == []
    assert checked == {"slots.item_head"}  # it was looked at (from 0045 on), not a pass with nothing to check


# booking_iso_instant with microseconds always: "2030-01-01T09:30:00.000000Z" for a whole second
_ISO_INSTANT_WITH_MICROSECONDS = """
CREATE OR REPLACE FUNCTION booking_iso_instant(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;
"""
# booking_slot_item_head (0049) writing slot_date with to_char: the same text for every slot here
_ITEM_HEAD_DATE_BY_TO_CHAR = """
CREATE OR REPLACE FUNCTION booking_slot_item_head(
    id uuid, service_id uuid, staff_id uuid, slot_date date, slot_start_time time, slot_end_time time,
    starts_at timestamptz, ends_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    SELECT '{"id":"' || id::text || '","service_id":"' || service_id::text
        || '","staff_id":' || COALESCE('"' || staff_id::text || '"', 'null')
        || ',"slot_date":"' || to_char(slot_date, 'YYYY-MM-DD')
        || '","slot_start_time":"' || slot_start_time::text || '","slot_end_time":"' || slot_end_time::text
        || '","starts_at":"' || booking_iso_instant(starts_at) || '","ends_at":"' || booking_iso_instant(ends_at)
        || '"'
$$;
"""
_REBUILD_ITEM_HEAD = """
ALTER TABLE slots DROP COLUMN item_head;
ALTER TABLE slots ADD COLUMN item_head TEXT NOT NULL GENERATED ALWAYS AS (
    booking_slot_item_head(id, service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at)
) STORED;
"""


@pytest.mark.parametrize(
    ("check", "later_migrations", "found"),
    [
        (
            "definitions",
            [_ISO_INSTANT_WITH_MICROSECONDS],
            ["booking_iso_instant(timestamp with time zone) was redefined after it by 9001_later.sql"],
        ),
        ("values", [_ISO_INSTANT_WITH_MICROSECONDS], ["after 9001_later.sql: 1 of 3 slots.item_head values"]),
        # the same text for these slots (so the values check passes), but a redefinition all the same
        ("values", [_ITEM_HEAD_DATE_BY_TO_CHAR], []),
        (
            "definitions",
            [_ITEM_HEAD_DATE_BY_TO_CHAR],
            [
                "booking_slot_item_head(uuid,uuid,uuid,date,time without time zone,time without time zone,timestamp with time zone,timestamp with time zone) was redefined after it by 9001_later.sql"
            ],
        ),
        # a rebuild in the same file or a later one
        ("definitions", [_ISO_INSTANT_WITH_MICROSECONDS + _REBUILD_ITEM_HEAD], []),
        ("values", [_ISO_INSTANT_WITH_MICROSECONDS + _REBUILD_ITEM_HEAD], []),
        ("definitions", [_ISO_INSTANT_WITH_MICROSECONDS, _REBUILD_ITEM_HEAD], []),
        # rebuilt, then redefined in the same file: only the stored values show it
        (
            "values",
            [_REBUILD_ITEM_HEAD + _ISO_INSTANT_WITH_MICROSECONDS],
            ["after 9001_later.sql: 1 of 3 slots.item_head values"],
        ),
    ],
)
async def test_the_checks_catch_a_function_redefined_without_a_rebuild(
    empty_db_url: str, migrations_copy: Path, staging: Path, check: str, later_migrations: list[str], found: list[str]
) -> None:
    for number, sql in enumerate(later_migrations, start=9001):
        (migrations_copy / f"{number}_later.sql").write_text(sql)
    if check == "definitions":
        problems = await functions_redefined_after_their_column(empty_db_url, migrations_copy, staging)
    else:
        problems, _ = await stored_values_unlike_their_expressions(empty_db_url, migrations_copy, staging)
    assert len(problems) == len(found)
    for problem, part in zip(problems, found, strict=True):
        assert part in problem
