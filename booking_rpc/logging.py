"""structlog set up once: JSON lines for machines, readable console output on a terminal.

Context is bound, not formatted into messages (`log.bind(conn=..., pattern=...)`). The hot path logs
nothing at info level; per-request lines exist only at debug.
"""

from __future__ import annotations

import logging
import sys

import structlog

from booking_rpc.config import Settings

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(settings: Settings) -> None:
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[settings.log_level]),
        # one write per line (print() writes the newline apart): worker processes sharing a stderr pipe
        # then never interleave inside each other's JSON lines
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
