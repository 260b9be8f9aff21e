"""Named SQL statements: parsing, lookup errors and malformed files."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from booking_rpc.app import sql_folder
from booking_rpc.config import Settings
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries, QueryFileError, default_sql_dir


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_statements_descriptions_and_trailing_semicolons(tmp_path: Path) -> None:
    write(
        tmp_path,
        "slots.sql",
        "-- file header, not a statement\n\n"
        "-- name: slots.find\n"
        "-- Find one slot\n"
        "-- by id.\n"
        "SELECT *\n  FROM slots\n WHERE id = $1;  \n\n"
        "-- name: slots.block\n"
        "UPDATE slots SET status = 'blocked' -- inline comment stays\n"
        "WHERE id = $1;\n",
    )
    write(tmp_path, "bookings.sql", "-- name: bookings.count\nSELECT count(*) FROM bookings\n")
    queries = Queries.load(tmp_path)

    assert sorted(queries) == ["bookings.count", "slots.block", "slots.find"]
    assert queries["slots.find"] == "SELECT *\n  FROM slots\n WHERE id = $1"
    assert queries.describe("slots.find") == "Find one slot by id."
    assert queries["slots.block"] == "UPDATE slots SET status = 'blocked' -- inline comment stays\nWHERE id = $1"
    assert queries.describe("slots.block") == ""
    assert queries["bookings.count"] == "SELECT count(*) FROM bookings"


def test_missing_name_lists_close_names(tmp_path: Path) -> None:
    write(tmp_path, "slots.sql", "-- name: slots.find\nSELECT 1;\n-- name: slots.find_range\nSELECT 2;\n")
    queries = Queries.load(tmp_path)
    with pytest.raises(KeyError) as info:
        queries["slots.fnd"]
    assert "slots.find" in str(info.value)


def test_duplicate_name_across_files_is_refused(tmp_path: Path) -> None:
    # a second file cannot reuse a name: its stem differs, so the prefix rule catches it first;
    # within one file the duplicate check does.
    write(tmp_path, "slots.sql", "-- name: slots.find\nSELECT 1;\n-- name: slots.find\nSELECT 2;\n")
    with pytest.raises(QueryFileError, match=r"duplicate statement name 'slots\.find'"):
        Queries.load(tmp_path)


@pytest.mark.parametrize("name", ["bookings.find", "slots", "slots.", "slotsfind"])
def test_name_must_start_with_file_stem(tmp_path: Path, name: str) -> None:
    write(tmp_path, "slots.sql", f"-- name: {name}\nSELECT 1;\n")
    with pytest.raises(QueryFileError, match=r"must start with 'slots\.'"):
        Queries.load(tmp_path)


def test_empty_statement_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "slots.sql", "-- name: slots.nothing\n-- only a description\n;\n")
    with pytest.raises(QueryFileError, match="empty"):
        Queries.load(tmp_path)


def test_empty_or_missing_folder_loads_nothing(tmp_path: Path) -> None:
    assert len(Queries.load(tmp_path)) == 0
    assert len(Queries.load(tmp_path / "absent")) == 0


def test_default_sql_dir_and_the_setting_that_overrides_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_RPC_SQL_DIR", str(tmp_path))
    # the variable is a setting, read by Settings alone: the default stays the repository's sql/
    assert (default_sql_dir() / "migrations" / "0001_schema.sql").is_file()
    assert sql_folder(Settings()) == default_sql_dir()
    settings = Settings.from_env({"BOOKING_RPC_SQL_DIR": str(tmp_path)})
    assert sql_folder(settings) == tmp_path
    (tmp_path / "queries").mkdir()
    write(tmp_path / "queries", "x.sql", "-- name: x.one\nSELECT 1\n")
    assert list(Queries.load(sql_folder(settings) / "queries")) == ["x.one"]


def test_repository_query_files_load() -> None:
    # every file other engineers add must parse; this fails on the first malformed one
    Queries.load()
    # the benches' own statements are theirs alone: none ships with the service
    bench = Queries.load(Path(__file__).resolve().parents[2] / "bench" / "sql")
    assert list(bench) == ["bench.fill_series"]
    assert not [name for name in Queries.load() if "fill_series" in name]


async def test_the_shared_booking_filter_is_inlined_so_searches_keep_their_indexes(pool: Pool, sql: Queries) -> None:
    # booking_matches (migration 0014) is written once for three statements; the planner must inline it
    async with pool.acquire() as conn:
        for name in ("bookings.find_by_created", "bookings.find_by_slot_time", "bookings.count"):
            stmt = await conn.prepare("EXPLAIN (VERBOSE) " + sql[name])
            args = [uuid.uuid4(), None, None, None, None, False, None, None, 10][: len(stmt.get_parameters())]
            plan = "\n".join(row[0] for row in await stmt.fetch(*args))
            assert "booking_matches" not in plan, plan
            assert "Index Scan using idx_bookings_user" in plan, plan
