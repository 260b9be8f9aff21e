"""`booking-rpc`: serve, migrate, call, emit, config."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from booking_rpc.config import Settings, SettingsError
from booking_rpc.context import Context
from booking_rpc.logging import configure_logging
from booking_rpc.loop import run


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "msgpack_port", "database_url", "data_dir", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    settings = Settings.from_env(**overrides)
    configure_logging(settings)  # every command logs to stderr: stdout carries only its output
    return settings


def _cmd_serve(args: argparse.Namespace) -> int:
    from booking_rpc.app import StartupError, serve
    from booking_rpc.db.pool import DatabaseUnavailable
    from booking_rpc.supervisor import SupervisorError, supervise

    settings = _settings(args)
    migrate_first = settings.migrate_on_start and not args.no_migrate
    try:
        run((supervise if settings.workers > 1 else serve)(settings, migrate_first=migrate_first))
    except (DatabaseUnavailable, StartupError, SupervisorError) as exc:
        print(f"booking-rpc: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from booking_rpc.app import open_database, sql_folder
    from booking_rpc.db.migrations import migrate_dsn
    from booking_rpc.db.pool import DatabaseUnavailable

    settings = _settings(args)

    async def go() -> list[str]:
        database = await open_database(settings)
        try:
            return await migrate_dsn(database.dsn, sql_folder(settings) / "migrations")
        finally:
            await asyncio.to_thread(database.stop)

    try:
        applied = run(go())
    except DatabaseUnavailable as exc:
        print(f"booking-rpc: {exc}", file=sys.stderr)
        return 2
    print("\n".join(applied) if applied else "nothing to apply")
    return 0


def _parse_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"booking-rpc: the payload is not JSON: {exc}") from exc


def _payload(argument: str) -> Any:
    """The payload argument: JSON text, `@file` (a file holding it) or `-` (stdin): a shell argument cannot
    hold a large payload."""
    if argument == "-":
        return _parse_json(sys.stdin.read())
    if argument.startswith("@"):
        try:
            return _parse_json(Path(argument[1:]).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SystemExit(f"booking-rpc: cannot read the payload file {argument[1:]}: {exc.strerror}") from exc
    return _parse_json(argument)


def _service_port(args: argparse.Namespace) -> int:
    """--port, else the port `serve` listens on (BOOKING_RPC_PORT, default 3000)."""
    if args.port is not None:
        return int(args.port)
    return Settings.from_env().port


def _pattern(text: str) -> Any:
    # An object pattern may be given as JSON ('{"cmd":"x"}'); anything else is a plain string.
    if text.startswith("{"):
        return _parse_json(text)
    return text


def _cmd_call(args: argparse.Namespace) -> int:
    from booking_rpc.client import Client, ClientError, RemoteError

    async def go() -> int:
        try:
            async with Client(args.host, _service_port(args), codec=args.codec) as client:
                reply = await client.send(_pattern(args.pattern), _payload(args.data), timeout=args.timeout)
        except RemoteError as exc:
            sys.stdout.write(orjson.dumps(exc.err, option=orjson.OPT_INDENT_2).decode() + "\n")
            return 1
        except ClientError as exc:
            print(f"booking-rpc: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    return run(go())


def _cmd_emit(args: argparse.Namespace) -> int:
    from booking_rpc.client import Client, ClientError

    async def go() -> int:
        try:
            async with Client(args.host, _service_port(args), codec=args.codec) as client:
                await client.emit(_pattern(args.pattern), _payload(args.data))
        except ClientError as exc:
            print(f"booking-rpc: {exc}", file=sys.stderr)
            return 2
        return 0

    return run(go())


def _cmd_config(args: argparse.Namespace) -> int:
    from booking_rpc.db.pool import redact

    settings = _settings(args)
    for name, value in settings.model_dump().items():
        variable = Settings.env_name(name)
        shown = "********" if name in ("database_url", "database_read_url") and value is not None else value
        if name == "nats_url":
            shown = ",".join(redact(url) for url in settings.nats_servers())
        source = "env" if os.environ.get(variable) else "default"
        print(f"{variable}={'' if shown is None else shown}  # {source}")
    from booking_rpc.tracing import TracingConfig

    for line in TracingConfig.from_env().describe():
        print(line)
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from booking_rpc.schemas import DEFAULT_DIR, check_schemas, write_schemas

    out = Path(args.out) if args.out else DEFAULT_DIR
    if args.check:
        stale = check_schemas(out)
        for rel in stale:
            print(f"stale: {rel}")
        return 1 if stale else 0
    written = write_schemas(out)
    print(f"wrote {len(written)} files under {out}")
    return 0


def _with_context(settings: Settings, work: Callable[[Context], Awaitable[int]]) -> int:
    """Run `work` against the configured database (embedded or DATABASE_URL), migrated."""
    from booking_rpc.app import database_context
    from booking_rpc.db.pool import DatabaseUnavailable

    async def go() -> int:
        async with database_context(settings) as ctx:
            return await work(ctx)

    try:
        return run(go())
    except DatabaseUnavailable as exc:
        print(f"booking-rpc: {exc}", file=sys.stderr)
        return 2


def _cmd_outbox(args: argparse.Namespace) -> int:
    from booking_rpc.events.relay import retry_dead

    async def work(ctx: Context) -> int:
        count = await retry_dead(ctx)
        print(f"re-driven: {count} event(s)")
        return 0

    return _with_context(_settings(args), work)


def _cmd_seed(args: argparse.Namespace) -> int:
    from booking_rpc.seed import instructions, seed_demo

    if not args.demo:
        print("booking-rpc: say what to seed: --demo", file=sys.stderr)
        return 2

    async def work(ctx: Context) -> int:
        print(instructions(await seed_demo(ctx, days=args.days)))
        return 0

    return _with_context(_settings(args), work)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="booking-rpc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def db_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", dest="database_url", help="PostgreSQL URL (env DATABASE_URL)")
        p.add_argument("--data-dir", dest="data_dir", help="embedded PostgreSQL data folder")

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="listen address (env BOOKING_RPC_HOST)")
    serve.add_argument("--port", type=int, help="NestJS TCP port (env BOOKING_RPC_PORT)")
    serve.add_argument("--msgpack-port", dest="msgpack_port", type=int, help="msgpack listener port")
    serve.add_argument("--workers", type=int, help="worker processes on the port (env BOOKING_RPC_WORKERS)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    db_flags(serve)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    db_flags(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    for name, func, helptext in (
        ("call", _cmd_call, "send a request and print the reply"),
        ("emit", _cmd_emit, "send an event (no reply)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("pattern")
        p.add_argument("data", nargs="?", default="{}", help="JSON payload, @file holding it, or - for stdin")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument(
            "--port",
            type=int,
            help="default: env BOOKING_RPC_PORT, else 3000",
        )
        p.add_argument("--codec", choices=["json", "msgpack"], default="json")
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(func=func)

    schemas = sub.add_parser("schemas", help="write the JSON Schemas and AsyncAPI document (schemas/)")
    schemas.add_argument("--check", action="store_true", help="exit 1 when the files on disk are stale")
    schemas.add_argument("--out", help="output folder (default: the repo's schemas/)")
    schemas.set_defaults(func=_cmd_schemas)

    outbox = sub.add_parser("outbox", help="outbox maintenance")
    outbox.add_argument("action", choices=["retry"], help="retry: re-drive every dead delivery")
    db_flags(outbox)
    outbox.set_defaults(func=_cmd_outbox)

    seed = sub.add_parser("seed", help="create demo clinics, services and a month of slots (idempotent)")
    seed.add_argument("--demo", action="store_true", help="the demo data set")
    seed.add_argument("--days", type=int, default=30, help="days of slots from tomorrow")
    db_flags(seed)
    seed.set_defaults(func=_cmd_seed)

    config = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below rather than at interpreter exit
    except SettingsError as exc:
        print(f"booking-rpc: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader left (`booking-rpc config | head`): quietly, with the exit status of a SIGPIPE death;
        # stdout goes to devnull so the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code
