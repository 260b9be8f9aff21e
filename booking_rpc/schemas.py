"""The published contract, generated from the pydantic models: JSON Schema per pattern and event, AsyncAPI.

`booking-rpc schemas` writes `schemas/`; a test fails when the checked-in files are stale, so the contract
other teams read never drifts from what the code accepts and sends.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from booking_rpc import __version__
from booking_rpc.handlers import build_router
from booking_rpc.models.consumed import CONSUMED_EVENTS
from booking_rpc.models.events import PUBLISHED_EVENTS, EventPayload

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
ERROR_SCHEMA: dict[str, Any] = {
    "title": "RpcError",
    "description": "The one error shape (`err` of a NestJS reply); statusCode maps to HTTP.",
    "type": "object",
    "properties": {
        "status": {"const": "error"},
        "statusCode": {"type": "integer"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "details": {},
    },
    "required": ["status", "statusCode", "code", "message"],
}


def _schema_of(tp: Any, mode: typing.Literal["validation", "serialization"]) -> dict[str, Any] | None:
    if tp is None or tp is type(None):
        return None
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_json_schema(mode=mode)
    return TypeAdapter(tp).json_schema(mode=mode)


def _with_draft(schema: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    out = {"$schema": DRAFT, **schema}
    if title:
        out.setdefault("title", title)
    return out


def published_event_schema(event: type[EventPayload]) -> dict[str, Any]:
    """The payload as peers receive it: the model plus event_type, event_id and occurred_at."""
    schema = event.model_json_schema(mode="serialization")
    schema["properties"] = {
        "event_type": {"const": event.event_type},
        "event_id": {"type": "string", "format": "uuid"},
        "occurred_at": {"type": "string", "format": "date-time"},
        **schema["properties"],
    }
    schema["required"] = ["event_type", "event_id", "occurred_at", *schema.get("required", [])]
    schema["additionalProperties"] = False
    return _with_draft(schema, event.event_type)


def build() -> dict[str, dict[str, Any]]:
    """Every schema file by its path relative to schemas/."""
    files: dict[str, dict[str, Any]] = {}
    router = build_router()
    operations: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    consumed_routes: dict[str, Any] = {}
    for route, entry in sorted(router.routes.items()):
        hints = typing.get_type_hints(entry.handler)
        params = list(hints)
        request_type = hints[params[0]] if params and params[0] != "return" else Any
        request = _schema_of(request_type, "validation")
        if entry.kind == "event":
            if request is not None:
                consumed_routes[route] = request
            continue
        reply_type = entry.reply if entry.reply is not None else hints.get("return")
        if entry.streaming:
            args = typing.get_args(reply_type)
            reply_type = args[0] if args else Any
        reply = _schema_of(reply_type, "serialization")
        files[f"patterns/{route}.request.json"] = _with_draft(request or {}, f"{route} request")
        files[f"patterns/{route}.reply.json"] = _with_draft(
            reply if reply is not None else {"type": "null"}, f"{route} reply"
        )
        channels[route] = {
            "address": route,
            "messages": {
                "request": {"$ref": f"#/components/messages/{route}.request"},
                "reply": {"$ref": f"#/components/messages/{route}.reply"},
            },
        }
        operations[route] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{route}"},
            "summary": (entry.handler.__doc__ or "").strip().split("\n")[0] or route,
            "reply": {
                "channel": {"$ref": f"#/channels/{route}"},
                "messages": [{"$ref": f"#/channels/{route}/messages/reply"}],
            },
        }
    for event in PUBLISHED_EVENTS:
        files[f"events/published/{event.event_type}.json"] = published_event_schema(event)
        channels[event.event_type] = {
            "address": event.event_type,
            "messages": {"event": {"$ref": f"#/components/messages/{event.event_type}"}},
        }
        operations[f"publish {event.event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{event.event_type}"},
            "summary": f"Sent to subscribers as a NestJS event after the transaction commits ({event.event_type})",
        }
    consumed = {name: _with_draft(model.model_json_schema(), name) for name, model in CONSUMED_EVENTS.items()}
    for route, schema in consumed_routes.items():
        consumed.setdefault(route, _with_draft(schema, route))
    for name, schema in sorted(consumed.items()):
        files[f"events/consumed/{name}.json"] = schema
        channels.setdefault(name, {"address": name, "messages": {"event": {"$ref": f"#/components/messages/{name}"}}})
        operations[f"consume {name}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{name}"}}
    messages: dict[str, Any] = {}
    for path in files:
        key = path.rsplit("/", 1)[1].removesuffix(".json")
        messages[key] = {"name": key, "contentType": "application/json", "payload": {"$ref": path}}
    files["asyncapi.json"] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "booking-rpc",
            "version": __version__,
            "description": "The Booking microservice over the NestJS TCP transport: request/reply patterns "
            "(`ClientProxy.send`), events it publishes and events it consumes (`emit`). Errors have the "
            "shape in components.schemas.RpcError.",
        },
        "defaultContentType": "application/json",
        "servers": {"tcp": {"host": "localhost:3000", "protocol": "tcp", "description": "NestJS TCP framing"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"RpcError": ERROR_SCHEMA}},
    }
    return files


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path = DEFAULT_DIR) -> list[Path]:
    files = build()
    written = []
    for rel, schema in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(schema))
        written.append(path)
    for stale in out_dir.rglob("*.json"):
        if str(stale.relative_to(out_dir)) not in files:
            stale.unlink()
    return written


def check_schemas(out_dir: Path = DEFAULT_DIR) -> list[str]:
    """Files that differ from what the code generates (missing, changed or left over)."""
    files = build()
    problems = [
        rel
        for rel, schema in files.items()
        if not (out_dir / rel).exists() or (out_dir / rel).read_text() != _render(schema)
    ]
    problems += [
        str(p.relative_to(out_dir)) for p in out_dir.rglob("*.json") if str(p.relative_to(out_dir)) not in files
    ]
    return sorted(problems)
