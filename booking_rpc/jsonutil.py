"""JSON in and out, one way for the whole service (orjson).

Money is Decimal and leaves as a JSON string ("12.50"), never as a float, so no peer ever sees 12.499999.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError


def default(obj: Any) -> Any:
    """orjson `default` hook for the types orjson does not know natively."""
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, BaseModel):
        # pydantic writes the model's JSON itself (no intermediate dict), embedded as is
        try:
            return orjson.Fragment(obj.__pydantic_serializer__.to_json(obj, by_alias=True))
        except PydanticSerializationError:
            # e.g. a lone surrogate in a str: the plain form lets the caller's fallback handle it
            return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (UUID, date, time and aware datetimes are native to orjson)."""
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)


def json_form(obj: Any) -> Any:
    """`obj` as JSON carries it (str for Decimal and UUID, ISO text for instants, a model's JSON): what a
    codec without those types (msgpack) writes instead, so a value means the same over either codec."""
    return orjson.loads(dumps(obj))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


__all__ = ["default", "dumps", "json_form", "loads"]
