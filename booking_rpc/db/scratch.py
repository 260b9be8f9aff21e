"""Throwaway databases for the tests and the benches: a server to make them on (DATABASE_URL's, else an
embedded one in a temporary folder), CREATE DATABASE (empty, migrated, or cloned from a template) and
DROP DATABASE. The one way both make and drop their databases.

DDL takes no parameters, so a database name is written into the statement: it must be a plain lower-case
identifier (the callers make them from random hex), which is checked, and it is quoted.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from booking_rpc.db.migrations import migrate_dsn
from booking_rpc.db.pool import with_database

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@contextlib.contextmanager
def server_dsn(url: str | None, prefix: str = "booking-rpc-pg-") -> Iterator[str]:
    """The DSN of a maintenance database of `url`'s server (DATABASE_URL), or, when `url` is empty, of an
    embedded PostgreSQL started in a temporary folder (named `prefix`...) and stopped afterwards."""
    if url:
        yield url
        return
    from booking_rpc.db.embedded import start_embedded  # pgserver is imported only when it is needed

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = start_embedded(Path(tmp))
        try:
            yield server.admin_dsn
        finally:
            server.stop()


async def admin(dsn: str, *statements: str) -> None:
    """Run `statements` one after the other on one connection to `dsn` (outside a transaction: CREATE
    DATABASE and ALTER SYSTEM refuse one)."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _quoted(name: str) -> str:
    if not _PLAIN_NAME.match(name):
        raise ValueError(f"database name {name!r} must be a plain lower-case identifier")
    return f'"{name}"'


async def create_database(base_dsn: str, name: str, template: str | None = None, migrated: bool = False) -> str:
    """CREATE DATABASE `name` on `base_dsn`'s server (a clone of `template` when given; with every migration
    applied when `migrated`); its DSN. Nobody may be connected to `template` meanwhile."""
    clause = f" TEMPLATE {_quoted(template)}" if template else ""
    await admin(base_dsn, f"CREATE DATABASE {_quoted(name)}{clause}")
    dsn = with_database(base_dsn, name)
    if migrated:
        try:
            await migrate_dsn(dsn)
        except BaseException:
            await drop_database(base_dsn, name)
            raise
    return dsn


async def drop_database(base_dsn: str, name: str) -> None:
    """DROP DATABASE `name` if it exists, closing its connections (WITH FORCE)."""
    await admin(base_dsn, f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


__all__ = ["admin", "create_database", "drop_database", "server_dsn"]
