"""Schema migrations: sql/migrations/NNNN_name.sql, applied in order, once, each in its own transaction.

Each applied file is recorded with its sha256 in schema_migrations; a file edited after it was applied is
refused (the database would silently differ from the file). A session advisory lock serialises replicas
that start at the same time: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from booking_rpc.db.queries import default_sql_dir

log = structlog.get_logger(__name__)

# Any fixed 64-bit number; all booking-rpc replicas must use the same one.
MIGRATION_LOCK_KEY = 0x626F6F6B696E67  # "booking"
_FILE_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations folder and the database disagree; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, e.g. 0001_schema.sql
    path: Path
    checksum: str

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def default_migrations_dir() -> Path:
    return default_sql_dir() / "migrations"


def discover(migrations_dir: Path | None = None) -> list[Migration]:
    """The migration files in version order; a malformed or duplicate version is an error."""
    folder = migrations_dir if migrations_dir is not None else default_migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version:04d} is also used by {found[version].name}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, path.name, path, checksum)
    return [found[v] for v in sorted(found)]


async def _applied(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def _check(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """Refuse edited applied files; return the ones still to apply."""
    todo: list[Migration] = []
    for m in migrations:
        if m.version not in applied:
            todo.append(m)
            continue
        name, checksum = applied[m.version]
        if checksum != m.checksum:
            raise MigrationError(
                f"migration {m.name} was changed after it was applied (recorded as {name}, "
                f"checksum {checksum[:12]}…, file now {m.checksum[:12]}…); "
                "put schema changes in a new migration file instead of editing an applied one"
            )
    return todo


async def pending(conn: asyncpg.Connection, migrations_dir: Path | None = None) -> list[str]:
    """Names of migrations not yet applied (raises MigrationError for an edited applied file)."""
    return [m.name for m in _check(discover(migrations_dir), await _applied(conn))]


async def migrate(conn: asyncpg.Connection, migrations_dir: Path | None = None) -> list[str]:
    """Apply every pending migration in order; return the names applied (empty when up to date)."""
    migrations = discover(migrations_dir)
    # Session lock (not a transaction lock): it must span several transactions, one per file.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        todo = _check(migrations, await _applied(conn))
        done: list[str] = []
        for m in todo:
            log.info("migration.apply", migration=m.name)
            async with conn.transaction():
                try:
                    await conn.execute(m.sql())
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {m.name} failed: {exc}") from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            done.append(m.name)
        return done
    finally:
        # a lost connection has released the lock already; unlocking it would hide the real error
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate_dsn(dsn: str, migrations_dir: Path | None = None) -> list[str]:
    """Open one plain connection, migrate, close it."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, migrations_dir)
    finally:
        await conn.close()


__all__ = [
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "default_migrations_dir",
    "discover",
    "migrate",
    "migrate_dsn",
    "pending",
]
