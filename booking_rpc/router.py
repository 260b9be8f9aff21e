"""Pattern → handler, payload validation and the mapping of every failure to the one error shape.

The server hands a route string and the raw `data`; a `Route` validates `data` into the handler's
annotated pydantic model, awaits the handler and returns its value. Whatever goes wrong leaves here as
an `RpcError`, so the transport only ever writes `{"err": {...}}` frames of one shape.
"""

from __future__ import annotations

import inspect
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any, Literal, get_type_hints

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError

from booking_rpc.errors import INTERNAL_ERROR, RpcError
from booking_rpc.wire.patterns import route_for_registration

log = structlog.get_logger(__name__)

Handler = Callable[..., Any]
Kind = Literal["message", "event"]


@dataclass(slots=True)
class Call:
    """What the transport knows of one incoming message besides its data. Handlers never see it.

    `metadata` is what came beside the data: the NestJS 12 packet `metadata` map over TCP, the message
    headers over NATS (both as received; read it with `header`). `deadline` is the loop time by which the
    reply is due, None for none. `attrs` is where middleware leaves what later middleware reads (the
    verified caller, the server span).
    """

    transport: str
    metadata: Mapping[str, Any] | None = None
    peer: Any = None
    deadline: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> Any:
        """A metadata value by case-insensitive name (NATS header names are case-insensitive), or None."""
        metadata = self.metadata
        if not metadata:
            return None
        if name in metadata:
            return metadata[name]
        lowered = name.lower()
        for key, value in metadata.items():
            if isinstance(key, str) and key.lower() == lowered:
                return value
        return None


# The `Call.attrs` key under which a TLS transport leaves the verified client certificate's subject (CN).
CLIENT_SUBJECT = "tls_client_subject"
# The `Call.attrs` key under which authentication leaves the verified caller (a models.common.Actor).
CALLER = "caller"

# What a middleware calls to go on: the next middleware, or validation and the handler, with `data`
# (a middleware may hand on other data, e.g. without a field it consumed).
Next = Callable[[Any], Awaitable[Any]]
# `async def middleware(route, data, call, call_next) -> value`: runs around every message and event of the
# router it is added to (Router.use), outermost first. It may refuse by raising RpcError. One with nothing
# to do after the route may be a plain function returning `call_next(data)` (a coroutine fewer per request).
Middleware = Callable[["Route", Any, Call, Next], Awaitable[Any]]


class _NoResponse:
    """What a handler returning None produces: NestJS then replies `{"isDisposed":true,"id":..}`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RESPONSE"


NO_RESPONSE: Any = _NoResponse()


PAYLOAD_FIELD = "(payload)"  # the `field` of an error about the payload as a whole
# pydantic's messages for these name our model classes ("… or instance of SlotsFindRequest"): the caller sent JSON
NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dataclass_type"})


def validation_error(exc: ValidationError) -> RpcError:
    """VALIDATION_FAILED with one detail per problem, in the caller's terms: JSON field paths and types."""
    details = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        field = ".".join(str(part) for part in err["loc"])
        if err["type"] in NOT_AN_OBJECT:
            message = "Input should be a JSON object" if field else "The payload must be a JSON object"
        else:
            message = err["msg"].removeprefix("Value error, ")  # a validator's own message, as written
        details.append({"field": field or PAYLOAD_FIELD, "message": message, "type": err["type"]})
    return RpcError("VALIDATION_FAILED", "The payload is invalid", details)


# `mapper(exc, route) -> RpcError | None`: what the caller sees for an exception of a registered type
# (None: not this mapper's case after all, so the next base class's mapper, then INTERNAL, decides).
ErrorMapper = Callable[[BaseException, str], "RpcError | None"]


def _validation_failed(exc: BaseException, route: str) -> RpcError | None:
    return validation_error(exc) if isinstance(exc, ValidationError) else None


def map_exception(exc: BaseException, route: str, mappers: Mapping[type[BaseException], ErrorMapper]) -> RpcError:
    """Turn any exception from a handler into the structured error the caller sees: the mapper registered
    for the nearest class of `exc` (starlette's exception-handler lookup), else INTERNAL."""
    if isinstance(exc, RpcError):
        return exc
    for cls in type(exc).__mro__:
        mapper = mappers.get(cls)
        if mapper is not None:
            mapped = mapper(exc, route)
            if mapped is not None:
                return mapped
    log.error("unexpected error in handler", route=route, exc_info=exc)
    return INTERNAL_ERROR


# Latency buckets (seconds) of the per-pattern histogram the metrics endpoint exports.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class RouteStats:
    """Counted in plain Python on the hot path (about a microsecond); exported at scrape time."""

    outcomes: Counter[str] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds_sum: float = 0.0

    def observe(self, seconds: float, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds


@dataclass(slots=True)
class Route:
    """One registered pattern: how to validate its payload and which coroutine answers it."""

    route: str
    kind: Kind
    handler: Handler
    adapter: TypeAdapter[Any] | None
    model: type[BaseModel] | None
    streaming: bool
    # Started without a Task (see server.protocol): only for handlers that need no Task context.
    eager: bool = False
    # The reply's published type when the handler returns a pre-rendered form of it (schemas/ reads this
    # instead of the return annotation); None: the return annotation is the reply's type.
    reply: Any = None
    # Counted for TCP and in-process calls; other transports count apart (stats_for), for the metrics'
    # `transport` label.
    stats: RouteStats = field(default_factory=RouteStats)
    transport_stats: dict[str, RouteStats] = field(default_factory=dict)
    # The owning router's middleware list (the same list object, so Router.use after registration counts).
    middleware: list[Middleware] = field(default_factory=list)
    # The owning router's error mappers (the same dict object, so Router.map_error after registration counts).
    error_mappers: dict[type[BaseException], ErrorMapper] = field(default_factory=dict)

    def parse(self, data: Any) -> Any:
        if self.model is not None:
            # the model's validator itself: model_validate is a Python frame around it that passes it defaults
            return self.model.__pydantic_validator__.validate_python(data if data is not None else {})
        if self.adapter is not None:
            return self.adapter.validate_python(data)
        return data

    def stats_for(self, transport: str) -> RouteStats:
        """The counters of this route's calls over `transport` ("tcp" and in-process calls share `stats`)."""
        if transport == "tcp":
            return self.stats
        stats = self.transport_stats.get(transport)
        if stats is None:
            stats = self.transport_stats[transport] = RouteStats()
        return stats

    async def invoke(self, data: Any, ctx: Any, call: Call | None = None, stats: RouteStats | None = None) -> Any:
        """The handler's value, `NO_RESPONSE`, or an async iterator for streams; raises only RpcError.

        `call` is what the transport knows of the message (None: an in-process call, e.g. seed); `stats`
        the counters to count it in (a transport's `stats_for`; default: `self.stats`).
        """
        if stats is None:
            stats = self.stats
        started = perf_counter()
        try:
            if self.middleware:
                result = await self._through(0, data, ctx, call if call is not None else Call("inproc"))
            else:
                result = await self._run(data, ctx)
        except RpcError as err:
            stats.observe(perf_counter() - started, err.code)
            raise
        except Exception as exc:
            mapped = map_exception(exc, self.route, self.error_mappers)
            stats.observe(perf_counter() - started, mapped.code)
            raise mapped from exc
        stats.observe(perf_counter() - started, "ok")
        return NO_RESPONSE if result is None else result

    async def consume(self, data: Any, ctx: Any, call: Call | None = None, stats: RouteStats | None = None) -> None:
        """Handle an event: the handler's value is dropped (a stream is drained); raises only RpcError."""
        result = await self.invoke(data, ctx, call, stats)
        if self.streaming and result is not NO_RESPONSE:
            async for _ in result:
                pass

    def _run(self, data: Any, ctx: Any) -> Awaitable[Any]:
        """The handler's coroutine on the validated payload. Not a coroutine of its own (one frame fewer on
        every request, each time it suspends and resumes): a payload that fails validation raises here, at
        once, and every caller awaits what this returns straight away, so it raises where it did."""
        payload = self.parse(data)
        if self.streaming:
            return _value(_guard_stream(self.handler(payload, ctx), self.route, self.error_mappers))
        awaitable: Awaitable[Any] = self.handler(payload, ctx)
        return awaitable

    def _through(self, index: int, data: Any, ctx: Any, call: Call) -> Awaitable[Any]:
        if index == len(self.middleware):
            return self._run(data, ctx)
        middleware = self.middleware[index]
        return middleware(self, data, call, lambda handed_on: self._through(index + 1, handed_on, ctx, call))


async def _value(value: Any) -> Any:
    return value


async def _guard_stream(
    stream: AsyncIterator[Any], route: str, mappers: Mapping[type[BaseException], ErrorMapper]
) -> AsyncIterator[Any]:
    try:
        async for item in stream:
            yield item
    except RpcError:
        raise
    except Exception as exc:
        raise map_exception(exc, route, mappers) from exc


def _payload_type(handler: Handler) -> Any:
    params = list(inspect.signature(handler).parameters.values())
    if not params:
        raise TypeError(f"handler {handler.__qualname__} must take (payload, ctx)")
    hints = get_type_hints(handler)
    return hints.get(params[0].name, Any)


class Router:
    """Registration by decorator; lookup by the normalised NestJS route string."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.middleware: list[Middleware] = []
        self.error_mappers: dict[type[BaseException], ErrorMapper] = {ValidationError: _validation_failed}

    def _register(
        self, pattern: Any, kind: Kind, eager: bool = False, reply: Any = None, payload: Any = None
    ) -> Callable[[Handler], Handler]:
        route = route_for_registration(pattern)

        def decorate(handler: Handler) -> Handler:
            if route in self.routes:
                raise ValueError(f"pattern {route!r} is registered twice")
            payload_type = payload if payload is not None else _payload_type(handler)
            model: type[BaseModel] | None = None
            adapter: TypeAdapter[Any] | None = None
            if isinstance(payload_type, type) and issubclass(payload_type, BaseModel):
                model = payload_type
            elif payload_type is not Any:
                adapter = TypeAdapter(payload_type)
            self.routes[route] = Route(
                route=route,
                kind=kind,
                handler=handler,
                adapter=adapter,
                model=model,
                streaming=inspect.isasyncgenfunction(handler),
                eager=eager,
                reply=reply,
                middleware=self.middleware,
                error_mappers=self.error_mappers,
            )
            return handler

        return decorate

    def message(self, pattern: Any, *, eager: bool = False, reply: Any = None) -> Callable[[Handler], Handler]:
        """A request/response pattern (`ClientProxy.send`).

        `eager=True` runs the handler straight from the socket callback until it first waits, saving a
        Task per request; only for handlers that use nothing needing a Task (no asyncio.timeout, no DB).
        `reply=Model` publishes the reply as `Model` when the handler returns a pre-rendered form of it
        (e.g. JSON PostgreSQL wrote) rather than the model itself.
        """
        return self._register(pattern, "message", eager, reply)

    def event(self, pattern: Any, *, payload: Any = None) -> Callable[[Handler], Handler]:
        """An event pattern (`ClientProxy.emit`): the result is dropped. `payload=Model` validates the data
        as `Model` when the handler serves several events and is annotated with their common base."""
        return self._register(pattern, "event", payload=payload)

    def include(self, other: Router) -> None:
        for route, entry in other.routes.items():
            if route in self.routes:
                raise ValueError(f"pattern {route!r} is registered twice")
            # a copy: the included router's entries are shared by every router that includes them (each
            # build_router()), and each must keep its own middleware and error mappers (the stats stay shared)
            self.routes[route] = replace(entry, middleware=self.middleware, error_mappers=self.error_mappers)

    def use(self, middleware: Middleware) -> None:
        """Run `middleware` around every route of this router (and of routers included later), after
        those added before it. A route registered `eager` runs outside a Task once any middleware is
        added too: middleware that needs a Task (asyncio.timeout) must pass eager routes straight on."""
        self.middleware.append(middleware)

    def map_error(self, exc_type: type[BaseException], mapper: ErrorMapper) -> None:
        """Answer a handler's `exc_type` (and its subclasses without a mapper of their own) with what
        `mapper` makes of it; the layer that raises such errors registers its mapper (the composition root
        does it for the database's), so the router knows no layer below it."""
        self.error_mappers[exc_type] = mapper

    def lookup(self, route: str | None) -> Route | None:
        if route is None:
            return None
        return self.routes.get(route)

    def models(self) -> dict[str, tuple[Kind, type[BaseModel] | None, Handler]]:
        """Every route with its payload model (for the published contract in schemas/)."""
        return {r: (e.kind, e.model, e.handler) for r, e in self.routes.items()}
