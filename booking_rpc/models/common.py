"""Models shared by every aggregate: the caller, pagination, money."""

from __future__ import annotations

import base64
import datetime as dt
import types
import typing
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer

from booking_rpc.errors import RpcError

M = TypeVar("M", bound=BaseModel)

# Money is exact: parsed from strings or numbers into Decimal, sent back as a string ("12.50").
Money = Annotated[Decimal, PlainSerializer(lambda d: str(d), return_type=str, when_used="json")]
CENT = Decimal("0.01")


def to_cents(value: Decimal) -> Decimal:
    """Round to 2 places, half-even (banker's rounding) — the one rounding rule for money."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


class Role(StrEnum):
    USER = "user"
    CLINIC_STAFF = "clinic_staff"
    ADMIN = "admin"
    SERVICE = "service"


class Model(BaseModel):
    """Base for payloads: unknown fields are refused so a typo is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Actor(Model):
    """Who is calling, as the gateway authenticated them."""

    id: UUID
    role: Role
    clinic_id: UUID | None = None


class ActorRequest(Model):
    """A payload carrying the caller; `actor` may be absent, and handlers that need one refuse it then."""

    actor: Actor | None = None


# The keyset before every row: a first page starts after (…, MIDNIGHT, NIL_UUID).
NIL_UUID = UUID(int=0)
MIDNIGHT = dt.time(0, 0)


def from_row(model: type[M], row: Any, prefix: str = "", **given: Any) -> M:
    """`model` from a database row (asyncpg.Record or a mapping): each field from the column of its name
    (after `prefix`: "p_" reads `p_amount` for `amount`), unless `given` (a value the row holds in another
    form)."""
    return model(**{name: given[name] if name in given else row[prefix + name] for name in model.model_fields})


# The field types whose JSON orjson writes exactly as pydantic does (UTC instants with OPT_UTC_Z)
_ROW_JSON_TYPES = (UUID, str, dt.datetime, type(None))


def _writes_as_pydantic(annotation: Any) -> bool:
    if annotation in _ROW_JSON_TYPES:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(value, str) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_writes_as_pydantic(arg) for arg in typing.get_args(annotation))
    return False


@cache
def _row_json_fields(model: type[BaseModel]) -> tuple[str, ...]:
    decorators = model.__pydantic_decorators__
    plain = not (decorators.field_serializers or decorators.model_serializers or model.__pydantic_computed_fields__)
    for name, info in model.model_fields.items():
        if not (plain and info.alias in (None, name) and not info.metadata and _writes_as_pydantic(info.annotation)):
            raise TypeError(f"{model.__name__}.{name}: row_json writes only plain UUID, str and instant fields")
    return tuple(model.model_fields)


def _uuid_text(value: Any) -> str:
    if isinstance(value, UUID):  # a UUID subclass (asyncpg's own), which orjson does not take for one
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a row_json field value")


def row_json(model: type[BaseModel], row: Any, uuid_text: Callable[[Any], str] = _uuid_text) -> orjson.Fragment:
    """`model`'s own JSON (what the transport writes for `from_row(model, row)`), rendered straight from a
    database row (each field from the column of its name, as the row's values are: no model object, no
    pydantic serialiser), for the replies of hot paths; the route declares `reply=model`. Only for flat
    models of UUID, str (and str Literal) and instant fields: orjson writes those as pydantic does
    (tests/test_row_json.py holds the two equal); any other model is a TypeError. `uuid_text` writes the
    UUIDs orjson does not (subclasses) and refuses any other value with TypeError: the database layer's
    `record_uuid_text` for asyncpg's rows, which does it in C."""
    fields = _row_json_fields(model)
    return orjson.Fragment(
        orjson.dumps({name: row[name] for name in fields}, default=uuid_text, option=orjson.OPT_UTC_Z)
    )


def encode_cursor(values: list[Any]) -> str:
    """An opaque keyset cursor: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps(values, default=str)).decode().rstrip("=")


def decode_cursor(cursor: str, *fields: Callable[[str], Any]) -> tuple[Any, ...]:
    """The values of a cursor made by encode_cursor, each read by its field's parser (`str`, `UUID`,
    `dt.date.fromisoformat`, ...); a cursor that is not that many such values is BAD_REQUEST."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(fields):
            raise ValueError("not a cursor of this page")
        return tuple(parse(str(value)) for parse, value in zip(fields, values, strict=True))
    except (TypeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise RpcError("BAD_REQUEST", "The cursor is not valid", {"field": "cursor"}) from exc
