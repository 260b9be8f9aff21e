"""OpenTelemetry tracing: one trace from the gateway through a request, its SQL and the events it wrote.

Off unless the standard OTEL_* variables ask for it (`OTEL_TRACES_EXPORTER` other than `none`, or an
`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`; `OTEL_SDK_DISABLED=true` wins). Off, nothing here runs: no router
middleware is installed (the TCP transport then builds no `Call`), the pool's connections are plain asyncpg
ones and transactions bind nothing.

On, `Tracing.install` puts it in three places:
- router middleware: the caller's W3C `traceparent`/`tracestate`/`baggage` from `Call.metadata` (the NestJS
  12.0.4+ packet metadata over TCP, the message headers over NATS), or for older gateways from a configured
  key inside `data` (removed before validation); one SERVER (CONSUMER for events) span per message, named by
  its pattern, with trace_id/span_id bound into structlog's context for every line logged meanwhile. A
  malformed carrier is ignored: the message starts a new trace, as one without metadata does.
- the pool's connection class: a CLIENT span per named statement (`sql/queries`), named by its statement
  name, never by its text; statements no named one matches (BEGIN, COMMIT, asyncpg's introspection) and
  statements run outside any span (relay polls, metrics) get none. Before a statement that writes, when
  the current trace is not the one the session already holds, it sets the session's
  `booking.trace_context`, which the outbox's `trace_context` column defaults to (migration 0035): events
  written by handlers, by the bookings trigger and by the hold statements alike carry the trace of the
  request (or job) that wrote them, at one round trip per request that writes and none for reads. A
  statement that takes the trace context as a parameter (`TRACE_PARAMETER`: the one-statement hold) gets
  it there instead, with no round trip of its own. The relay sends it on as the event's `metadata`
  (NestJS: `TcpContext.getMetadata()`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from booking_rpc import jsonutil
from booking_rpc.db.pool import ServiceConnection
from booking_rpc.errors import RpcError
from booking_rpc.router import NO_RESPONSE, Call, Middleware, Next, Route, Router, map_exception

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from booking_rpc.config import Settings
    from booking_rpc.db.queries import Queries

# The transaction setting the outbox's trace_context column defaults to (migration 0035).
TRANSACTION_SETTING = "booking.trace_context"
BIND_STATEMENT = "tracing.bind_context"
# A statement that may write events (directly, or through the bookings trigger): it gets the trace first.
WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
# A writing statement that takes its events' trace context as parameter $N (reservations.hold): the traced
# connection fills that parameter in when the caller passes NULL, instead of setting the session's first.
TRACE_PARAMETER = re.compile(r"coalesce\(\$(\d+)::text, current_setting\('booking\.trace_context', true\)\)")
OUTCOME = "booking.rpc.outcome"
ERROR_CODE = "booking.rpc.error_code"
# Variables shown by `booking-rpc config` (the SDK and exporters read these and the other OTEL_* ones).
SHOWN_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PROPAGATORS",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
)
SECRET_VARIABLES = {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}
DEFAULT_SERVICE_NAME = "booking-rpc"

log = structlog.get_logger(__name__)


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What the OTEL_* variables ask for (the SDK reads the rest of them itself)."""

    enabled: bool
    exporters: tuple[str, ...]
    protocol: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TracingConfig:
        env = os.environ if environ is None else environ
        listed = tuple(e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip())
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        exporters = tuple(e for e in listed if e != "none") if listed else (("otlp",) if endpoint else ())
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        )
        return cls(enabled=bool(exporters) and not disabled, exporters=exporters, protocol=protocol)

    def describe(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Lines for `booking-rpc config`: on/off, then each OTEL_* variable that matters (secrets masked)."""
        env = os.environ if environ is None else environ
        state = (
            f"on, exporters {','.join(self.exporters)} ({self.protocol} for otlp)"
            if self.enabled
            else "off (set OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT to turn it on)"
        )
        lines = [f"# tracing: {state}"]
        if self.enabled:
            lines += [f"# exporter {name}: {exporter_description(name, self.protocol)}" for name in self.exporters]
        for name in SHOWN_VARIABLES:
            value = env.get(name, "")
            if name == "OTEL_SERVICE_NAME" and not value:
                lines.append(f"{name}={DEFAULT_SERVICE_NAME}  # default")
                continue
            shown = "********" if value and name in SECRET_VARIABLES else value
            lines.append(f"{name}={shown}  # {'env' if value else 'default'}")
        return lines


# OTEL_TRACES_EXPORTER names (the SDK's entry point names) → what `booking-rpc config` says each one is
EXPORTERS = {
    "otlp": "OTLP by OTEL_EXPORTER_OTLP_PROTOCOL",
    "otlp_proto_http": "the stock OTLP/HTTP protobuf exporter (opentelemetry-exporter-otlp-proto-http)",
    "otlp_proto_grpc": "the stock OTLP/gRPC exporter (opentelemetry-exporter-otlp-proto-grpc)",
    "console": "the SDK's console exporter",
}


def exporter_description(name: str, protocol: str) -> str:
    """Which SpanExporter `name` (an OTEL_TRACES_EXPORTER entry) makes with `protocol`, for `booking-rpc config`."""
    if name == "otlp":
        if protocol == "http/protobuf":
            return "booking_rpc.otlp.OtlpHttpSpanExporter (OTLP/HTTP protobuf, encoded by booking_rpc)"
        if protocol == "grpc":
            return EXPORTERS["otlp_proto_grpc"]
    return EXPORTERS.get(name, f"unknown exporter {name!r}")


def _exporter(name: str, protocol: str) -> Any:
    """`otlp` over http/protobuf is ours (booking_rpc.otlp: the same bytes on the wire, a third of the
    stock encoder's CPU per span); the stock exporters stay selectable by their entry point names."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name not in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} ({', '.join(EXPORTERS)} or none)")
    if name == "otlp_proto_grpc" or (name == "otlp" and protocol == "grpc"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if name == "otlp_proto_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    if protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not grpc or http/protobuf")
    from booking_rpc.otlp import OtlpHttpSpanExporter

    return OtlpHttpSpanExporter()


def provider_from_env(config: TracingConfig) -> TracerProvider:
    """A TracerProvider with a batch processor per configured exporter; sampler and resource from OTEL_*."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class _HashOnceResource(Resource):
        """Hashes once: the OTLP encoder looks every exported span's resource up in a dict, and
        Resource.__hash__ JSON-encodes all its attributes each time (~3 of the ~18 µs a span takes to
        encode on the bench machine). A Resource never changes, so neither does its hash."""

        _hash: int | None = None

        def __hash__(self) -> int:
            if self._hash is None:
                self._hash = super().__hash__()
            return self._hash

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # sampler: OTEL_TRACES_SAMPLER (default parentbased_always_on)
    provider = TracerProvider(resource=_HashOnceResource(resource.attributes, resource.schema_url))
    # a malformed tracestate/baggage is ignored as the spec says; a warning per such message would let any
    # caller fill the log
    for noisy in ("opentelemetry.trace.span", "opentelemetry.baggage.propagation"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for name in config.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, config.protocol)))
    return provider


# --- carriers -----------------------------------------------------------------------------------------


class _CallGetter(Getter[Call]):
    """Reads a carrier key from a Call's metadata, ignoring case; only string values count."""

    def get(self, carrier: Call, key: str) -> list[str] | None:
        value = carrier.header(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Call) -> list[str]:
        return [k for k in carrier.metadata or () if isinstance(k, str)]


class _MapGetter(Getter[Mapping[str, Any]]):
    """Reads a carrier key from a plain map (a `data` field, a stored trace context); strings only."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k for k in carrier if isinstance(k, str)]


CALL_GETTER = _CallGetter()
MAP_GETTER = _MapGetter()
EMPTY_CONTEXT = otel_context.Context()


def instrument(router: Router, settings: Settings, tracing: Tracing | None) -> None:
    """What the service installs: tracing when on; off, only the data field's removal when one is set
    (gateways keep sending it, strict payload models must not see it); else nothing at all."""
    if tracing is not None:
        tracing.install(router)
    elif settings.trace_data_field:
        router.use(strip_field_middleware(settings.trace_data_field))


def connection_class(tracing: Tracing | None, sql: Queries) -> type[asyncpg.Connection]:
    """The pool's connection class: traced when tracing is on, else the pool's own."""
    return tracing.connection_class(sql) if tracing is not None else ServiceConnection


def strip_field_middleware(field: str) -> Middleware:
    """Only removes `field` from `data` (tracing off, but gateways still put their carrier there: strict
    payload models must not see it)."""

    async def strip_trace_field(route: Route, data: Any, call: Call, call_next: Next) -> Any:
        if isinstance(data, dict) and field in data:
            data = {k: v for k, v in data.items() if k != field}
        return await call_next(data)

    return strip_trace_field


# --- the tracer -----------------------------------------------------------------------------------------


class Tracing:
    """Spans for messages, SQL statements, relay deliveries and jobs, on one TracerProvider."""

    def __init__(
        self,
        provider: trace.TracerProvider,
        *,
        data_field: str | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("booking_rpc")
        self.propagator = propagator if propagator is not None else get_global_textmap()
        self.data_field = data_field or None
        self._attributes: dict[tuple[str, str], dict[str, Any]] = {}
        self._fields = frozenset(f.lower() for f in self.propagator.fields)
        self._log_ids = LogIds()

    @classmethod
    def from_env(cls, *, data_field: str | None = None) -> Tracing | None:
        """None when OTEL_* leaves tracing off (the default)."""
        config = TracingConfig.from_env()
        if not config.enabled:
            return None
        return cls(provider_from_env(config), data_field=data_field)

    def install(self, router: Router) -> None:
        """Trace every message of `router` (the relay and the jobs find the Tracing in `ctx.extras["tracing"]`,
        and the pool's connections must be of `connection_class` for the SQL spans and the events' trace)."""
        router.use(self.middleware)

    def shutdown(self) -> None:
        """Flush what the batch processors hold and stop them."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # --- incoming messages

    def extract(self, carrier: Mapping[str, Any] | Call) -> otel_context.Context | None:
        """The remote parent in `carrier`, or None when it holds no valid one (malformed = none)."""
        try:
            if isinstance(carrier, Call):
                found = self.propagator.extract(carrier, EMPTY_CONTEXT, CALL_GETTER)
            else:
                found = self.propagator.extract(carrier, EMPTY_CONTEXT, MAP_GETTER)
        except Exception:  # a propagator that chokes on odd input: the message just starts a new trace
            return None
        if not trace.get_current_span(found).get_span_context().is_valid:
            return None
        return found

    def parent_of(self, data: Any, call: Call) -> tuple[otel_context.Context, Any]:
        """The caller's context (metadata first, then the configured data field) and `data` without it."""
        metadata = call.metadata
        # the propagators only run when the metadata has a key they read (a deadline's `timeout` alone is not)
        parent = self.extract(call) if metadata and any(_lower(k) in self._fields for k in metadata) else None
        field = self.data_field
        if field is not None and isinstance(data, dict) and field in data:
            carrier = data[field]
            data = {k: v for k, v in data.items() if k != field}
            if parent is None and isinstance(carrier, dict):
                parent = self.extract(carrier)
        return (parent if parent is not None else EMPTY_CONTEXT), data

    def _span_attributes(self, route: Route, transport: str) -> dict[str, Any]:
        """The attributes a message's span starts with, one dict per pattern and transport (the SDK copies
        it). The outcome starts as ok; a failure overwrites it (one attribute fewer to set per request)."""
        key = (route.route, transport)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {
                "rpc.system": "nestjs",
                "rpc.method": route.route,
                "network.transport": transport,
                OUTCOME: "ok",
            }
        return attributes

    async def middleware(self, route: Route, data: Any, call: Call, call_next: Next) -> Any:
        # one coroutine, no context manager: this runs around every message
        parent, data = self.parent_of(data, call)
        span = self.tracer.start_span(
            route.route,
            parent,
            SpanKind.SERVER if route.kind == "message" else SpanKind.CONSUMER,
            self._span_attributes(route, call.transport),
            record_exception=False,
            set_status_on_exception=False,
        )
        call.attrs["span"] = span
        context: otel_context.Context | None = None
        if not route.eager:  # an eager route runs outside a Task, in the connection's context: attach nothing
            context = trace.set_span_in_context(span, parent)
            token = otel_context.attach(context)
            bound = self._log_ids.bind(span)
        streamed = False
        try:
            result = await call_next(data)
            if route.streaming and result is not NO_RESPONSE:
                streamed = True  # the span ends with the stream (_streamed), not here
                return _streamed(span, context, route, result, self._log_ids)
            return result
        except Exception as exc:
            # mapped here, not later by the route, so the span has the code the caller gets (logged once)
            mapped = map_exception(exc, route.route, route.error_mappers)
            fail(span, exc, mapped.code)
            if mapped is exc:
                raise
            raise mapped from exc
        except BaseException as exc:
            fail(span, exc)
            raise
        finally:
            if not streamed:
                span.end()
            if context is not None:
                self._log_ids.reset(bound)
                otel_context.detach(token)

    # --- SQL

    def connection_class(self, sql: Queries) -> type[asyncpg.Connection]:
        """An asyncpg Connection class whose named statements each run in a span of their own, and whose
        writing statements first make sure the session's booking.trace_context is the current trace (or,
        taking it as a parameter, get it there)."""
        names = sql.names_by_text()
        bind_sql = sql[BIND_STATEMENT]
        names.pop(bind_sql, None)  # bookkeeping, not one of the request's own statements
        carried = {text: int(m.group(1)) - 1 for text in names if (m := TRACE_PARAMETER.search(text))}
        binders = {text for text in names if WRITES.search(text) and text not in carried}
        attributes = {text: {"db.system.name": "postgresql", "db.query.summary": n} for text, n in names.items()}
        tracer = self.tracer
        propagator = self.propagator

        def context_text(current: trace.Span) -> str:
            """The current trace context as the JSON text the outbox stores ("" when there is none)."""
            if not current.get_span_context().is_valid:
                return ""
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            return jsonutil.dumps(carrier).decode()

        def carry(query: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
            """`args` with the statement's trace-context parameter filled in, when the caller left it NULL."""
            index = carried[query]
            if index >= len(args) or args[index] is not None:
                return args
            return (*args[:index], context_text(trace.get_current_span()), *args[index + 1 :])

        async def in_span(query: str, run: Coroutine[Any, Any, Any]) -> Any:
            span = tracer.start_span(names[query], None, SpanKind.CLIENT, attributes[query], record_exception=False)
            try:
                return await run
            except BaseException as exc:
                fail(span, exc)
                raise
            finally:
                span.end()

        class TracedConnection(ServiceConnection):
            # the span whose context the session setting holds, and that setting's text ("" = none)
            _bound_span: trace.Span = trace.INVALID_SPAN
            _bound_text = ""

            async def _bind(self, current: trace.Span) -> None:
                text = context_text(current)
                if text != self._bound_text:
                    await asyncpg.Connection.execute(self, bind_sql, text)
                    self._bound_text = text
                self._bound_span = current

            async def _bind_then(self, current: trace.Span, query: str, run: Coroutine[Any, Any, Any]) -> Any:
                try:
                    await self._bind(current)
                except BaseException:
                    run.close()
                    self._bound_span, self._bound_text = trace.INVALID_SPAN, "?"
                    raise
                return await (in_span(query, run) if current.is_recording() else run)

            def _traced(self, query: str, run: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
                """`run` itself when it needs neither a span nor the session's trace (no coroutine of ours
                around it: most statements of an unsampled request, and those of no request at all)."""
                if query not in names:
                    if query.startswith("ROLLBACK"):  # a session setting made in the transaction is undone
                        self._bound_span, self._bound_text = trace.INVALID_SPAN, "?"
                    return run
                current = trace.get_current_span()
                if query in binders and current is not self._bound_span:
                    return self._bind_then(current, query, run)
                if not current.is_recording():
                    # no trace (relay polls, metrics) or one not sampled: no span object, not even a
                    # non-recording one (the writes above still carry an unsampled trace on to consumers)
                    return run
                return in_span(query, run)

            # not `async def`: each returns the statement's coroutine (or ours around it), one frame fewer
            def execute(self, query: str, *args: Any, timeout: float | None = None) -> Coroutine[Any, Any, str]:
                if query in carried:
                    args = carry(query, args)
                return self._traced(query, super().execute(query, *args, timeout=timeout))

            def executemany(
                self, command: str, args: Iterable[Any], *, timeout: float | None = None
            ) -> Coroutine[Any, Any, None]:
                return self._traced(command, super().executemany(command, args, timeout=timeout))

            def fetch(
                self, query: str, *args: Any, timeout: float | None = None, **kw: Any
            ) -> Coroutine[Any, Any, Any]:
                if query in carried:
                    args = carry(query, args)
                return self._traced(query, super().fetch(query, *args, timeout=timeout, **kw))

            def fetchrow(
                self, query: str, *args: Any, timeout: float | None = None, **kw: Any
            ) -> Coroutine[Any, Any, Any]:
                if query in carried:
                    args = carry(query, args)
                return self._traced(query, super().fetchrow(query, *args, timeout=timeout, **kw))

            def fetchval(
                self, query: str, *args: Any, column: int = 0, timeout: float | None = None
            ) -> Coroutine[Any, Any, Any]:
                if query in carried:
                    args = carry(query, args)
                return self._traced(query, super().fetchval(query, *args, column=column, timeout=timeout))

        return TracedConnection

    # --- relay deliveries and jobs

    @contextmanager
    def root_span(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], links: Sequence[Link] = ()
    ) -> Iterator[trace.Span]:
        """A span that starts a trace of its own (a relay batch, a job run), current while the block runs."""
        span = self.tracer.start_span(name, EMPTY_CONTEXT, kind, attributes, links, record_exception=False)
        token = otel_context.attach(trace.set_span_in_context(span, EMPTY_CONTEXT))
        try:
            yield span
        except BaseException as exc:
            fail(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def links_to(self, carriers: Iterable[Mapping[str, Any] | None]) -> list[Link]:
        """Links to the traces of stored trace contexts (a relay batch to the requests that wrote it)."""
        links = []
        for carrier in carriers:
            if carrier:
                found = self.extract(carrier)
                if found is not None:
                    links.append(Link(trace.get_current_span(found).get_span_context()))
        return links


def fail(span: trace.Span, exc: BaseException, code: str | None = None) -> None:
    """Mark a span failed with the exception and an error code (default: the RpcError's, else its type)."""
    if code is None:
        if isinstance(exc, RpcError):
            code = exc.code
        elif isinstance(exc, asyncio.CancelledError):
            code = "CANCELLED"
        else:
            code = type(exc).__name__
    if isinstance(exc, Exception):
        span.record_exception(exc)
    span.set_attribute(OUTCOME, "error")
    span.set_attribute(ERROR_CODE, code)
    span.set_status(Status(StatusCode.ERROR, code))


class LogIds:
    """trace_id/span_id in structlog's context (merge_contextvars adds them to every line logged meanwhile),
    set on structlog's own two context variables directly: `bind_contextvars`/`reset_contextvars` cost a
    dict of tokens, two key formats and two lookups per call, and this runs for every message."""

    __slots__ = ("_span_id", "_trace_id")

    def __init__(self) -> None:
        # structlog's variables for the two keys (created by bind_contextvars, the only public way to them)
        tokens = structlog.contextvars.bind_contextvars(trace_id=None, span_id=None)
        self._trace_id, self._span_id = tokens["trace_id"].var, tokens["span_id"].var
        structlog.contextvars.reset_contextvars(**tokens)

    def bind(self, span: trace.Span) -> tuple[contextvars.Token[Any], contextvars.Token[Any]]:
        span_context = span.get_span_context()
        return (
            self._trace_id.set(format(span_context.trace_id, "032x")),
            self._span_id.set(format(span_context.span_id, "016x")),
        )

    def reset(self, tokens: tuple[contextvars.Token[Any], contextvars.Token[Any]]) -> None:
        self._span_id.reset(tokens[1])
        self._trace_id.reset(tokens[0])


def _lower(key: Any) -> Any:
    return key.lower() if isinstance(key, str) else key


async def _streamed(
    span: trace.Span, context: otel_context.Context | None, route: Route, items: AsyncIterator[Any], log_ids: LogIds
) -> AsyncIterator[Any]:
    """A streamed reply's items with the message's span current (and its ids in the log context) while each
    is produced; the span ends after the transport has taken the last one, or at the failure, or when the
    consumer stops early (the caller went away)."""
    try:
        while True:
            token = otel_context.attach(context) if context is not None else None
            bound = log_ids.bind(span)
            try:
                item = await anext(items)
            except StopAsyncIteration:
                break
            finally:
                log_ids.reset(bound)
                if token is not None:
                    otel_context.detach(token)
            yield item
    except Exception as exc:
        fail(span, exc, map_exception(exc, route.route, route.error_mappers).code)
        raise
    except BaseException as exc:
        fail(span, exc)
        raise
    finally:
        span.end()


def stored_metadata(trace_context: Any) -> dict[str, str] | None:
    """An outbox row's stored trace context as the metadata of the event frame (None: send none)."""
    if not isinstance(trace_context, dict) or not trace_context:
        return None
    return {k: v for k, v in trace_context.items() if isinstance(k, str) and isinstance(v, str)} or None


def nats_headers(trace_context: Any) -> dict[str, str]:
    """The hook for the NATS sink: an outbox row's stored trace context as message headers (W3C names)."""
    return stored_metadata(trace_context) or {}


__all__ = [
    "TRANSACTION_SETTING",
    "Tracing",
    "TracingConfig",
    "connection_class",
    "fail",
    "instrument",
    "nats_headers",
    "provider_from_env",
    "stored_metadata",
    "strip_field_middleware",
]
