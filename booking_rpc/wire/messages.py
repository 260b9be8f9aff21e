"""What a decoded message is (request or event) and the exact reply shapes NestJS peers expect.

Reply dicts are built in NestJS's key order (`response|err`, `isDisposed`, `id`), so the encoded bytes are
the ones a NestJS server would write. A reply must never carry keys other than id, err, response,
isDisposed and status: a NestJS 12.0.2+ client treats anything else as an "external" packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from booking_rpc.wire.patterns import route_for_registration, route_of

NO_HANDLER_MESSAGE: Final = "There is no matching message handler defined in the remote service."


@dataclass(slots=True)
class Request:
    """A message with an `id` key (even `"id": null`): the peer waits for a reply carrying that id."""

    pattern: Any
    route: str | None
    data: Any
    id: Any
    metadata: dict[str, Any] | None


@dataclass(slots=True)
class Event:
    """A message without an `id` key: fire and forget, nothing is ever sent back."""

    pattern: Any
    route: str | None
    data: Any
    metadata: dict[str, Any] | None


def classify(message: Any) -> Request | Event:
    """NestJS rules: `isUndefined(packet.id)` means event. A non-object message, or one with neither
    `pattern` nor `data`, is an event with no pattern (NestJS only logs it)."""
    if not isinstance(message, dict):
        return Event(pattern=None, route=None, data=message, metadata=None)
    if "pattern" not in message and "data" not in message:
        # NestJS's deserializer calls this an external packet: {pattern: undefined, data: packet}, no id.
        return Event(pattern=None, route=None, data=message, metadata=None)
    pattern = message.get("pattern")
    metadata = message.get("metadata")
    if not isinstance(metadata, dict):
        metadata = None
    route = route_of(pattern)
    if "id" in message:
        return Request(pattern, route, message.get("data"), message["id"], metadata)
    return Event(pattern, route, message.get("data"), metadata)


# --- replies (server -> client) ----------------------------------------------------------------------


def response_reply(id: Any, value: Any) -> dict[str, Any]:
    """The single, final value of a request."""
    return {"response": value, "isDisposed": True, "id": id}


def stream_item_reply(id: Any, value: Any) -> dict[str, Any]:
    """A non-final value of a streamed reply (NestJS's frame for each Observable value but the last)."""
    return {"response": value, "id": id}


def disposed_reply(id: Any) -> dict[str, Any]:
    """Completion without a value (handler returned undefined, or a stream ended in a later tick)."""
    return {"isDisposed": True, "id": id}


def error_reply(id: Any, err: Any) -> dict[str, Any]:
    """A failed request; `err` reaches the NestJS caller's `observer.error` as is, so it must be truthy."""
    return {"err": err, "isDisposed": True, "id": id}


def no_handler_reply(id: Any) -> dict[str, Any]:
    """NestJS's own frame for an unknown pattern (its own key order, a string `err`, no isDisposed)."""
    return {"id": id, "status": "error", "err": NO_HANDLER_MESSAGE}


# --- messages (our client -> server) -----------------------------------------------------------------


def request_message(pattern: Any, data: Any, id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A request as ClientProxy.send writes it: the pattern raw, key order pattern, data, metadata?, id."""
    message: dict[str, Any] = {"pattern": pattern, "data": data}
    if metadata is not None:
        message["metadata"] = metadata
    message["id"] = id
    return message


def event_message(pattern: Any, data: Any, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """An event as ClientProxy.emit writes it: the pattern already normalised to its route string."""
    message: dict[str, Any] = {"pattern": route_for_registration(pattern), "data": data}
    if metadata is not None:
        message["metadata"] = metadata
    return message


__all__ = [
    "NO_HANDLER_MESSAGE",
    "Event",
    "Request",
    "classify",
    "disposed_reply",
    "error_reply",
    "event_message",
    "no_handler_reply",
    "request_message",
    "response_reply",
    "stream_item_reply",
]
