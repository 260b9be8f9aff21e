"""models.common.row_json: a flat model's JSON rendered from a row is byte for byte the model's own JSON."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from booking_rpc import jsonutil
from booking_rpc.db.pool import Pool, record_uuid_text
from booking_rpc.models.common import Money, row_json
from booking_rpc.models.reservations import ReservationOut
from booking_rpc.wire.json_codec import encode_frame
from booking_rpc.wire.messages import response_reply

TEXTS = ["plain", 'q"uote \\ back/slash', "ctl \x01\x1f\x7f\n\t\r\b\f", "猫🐕 naïve \u2028\u2029 </script>", ""]


def model_json(row: Any) -> bytes:
    """What the transport wrote for the reply before: the model validated from the row, then its JSON."""
    return jsonutil.dumps(ReservationOut.model_validate(dict(row)))


async def test_rows_from_postgresql_render_as_the_model_does(pool: Pool) -> None:
    # asyncpg's own UUID class and timestamptz values (whole seconds, micro- and milliseconds), NULLs and
    # every kind of character PostgreSQL text holds
    async with pool.acquire() as conn:
        for text in TEXTS:
            for instant in ("2030-01-01 09:30:00+00", "2030-01-01 09:30:00.12+00", "1999-12-31 23:59:59.000001+05"):
                rows = await conn.fetch(
                    "SELECT gen_random_uuid() AS id, gen_random_uuid() AS user_id, gen_random_uuid() AS pet_id, "
                    "gen_random_uuid() AS service_id, gen_random_uuid() AS slot_id, $1::text AS lock_id, "
                    "'pending' AS status, $2::timestamptz AS expires_at, k AS idempotency_key, "
                    "'fp' AS request_fingerprint, $2::timestamptz AS created_at, u AS updated_at "
                    "FROM (VALUES ($1::text, now()), (NULL, NULL)) AS v(k, u)",
                    text,
                    dt.datetime.fromisoformat(instant),
                )
                for row in rows:
                    assert jsonutil.dumps(row_json(ReservationOut, row)) == model_json(row)
                    assert jsonutil.dumps(row_json(ReservationOut, row, record_uuid_text)) == model_json(row)
                    frame = encode_frame(response_reply("id-1", row_json(ReservationOut, row)))
                    assert frame == encode_frame(response_reply("id-1", ReservationOut.model_validate(dict(row))))


instants = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
) | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lock_id=st.text(st.characters(exclude_categories=("Cs",))),
    key=st.none() | st.text(st.characters(exclude_categories=("Cs",)), min_size=1),
    status=st.sampled_from(["pending", "confirmed", "cancelled", "expired"]),
    expires_at=instants,
    created_at=st.none() | instants,
)
def test_any_field_values_render_as_the_model_does(
    lock_id: str, key: str | None, status: str, expires_at: dt.datetime, created_at: dt.datetime | None
) -> None:
    row = {
        "id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "pet_id": uuid.uuid4(),
        "service_id": uuid.uuid4(),
        "slot_id": uuid.uuid4(),
        "lock_id": lock_id,
        "status": status,
        "expires_at": expires_at,
        "idempotency_key": key,
        "created_at": created_at,
        "updated_at": None,
    }
    assert jsonutil.dumps(row_json(ReservationOut, row)) == model_json(row)


class WithMoney(BaseModel):
    id: uuid.UUID
    price: Money


class WithAlias(BaseModel):
    kind: str = Field(alias="type")


class WithInt(BaseModel):
    n: int


class WithLiteral(BaseModel):
    mode: Literal["a", 1]


@pytest.mark.parametrize("model", [WithMoney, WithAlias, WithInt, WithLiteral])
def test_a_model_whose_json_orjson_may_write_otherwise_is_refused(model: type[BaseModel]) -> None:
    with pytest.raises(TypeError, match="row_json writes only"):
        row_json(model, {"id": uuid.uuid4(), "price": Decimal("1.00"), "type": "x", "n": 1, "mode": "a"})


def test_a_value_of_another_type_in_a_uuid_field_is_refused() -> None:
    row = {name: uuid.uuid4() for name in ReservationOut.model_fields}
    row["id"] = 7j  # nothing orjson writes: the UUID text hook gets it
    for uuid_text in (record_uuid_text, None):
        with pytest.raises(TypeError):
            row_json(ReservationOut, row, *([uuid_text] if uuid_text else []))
