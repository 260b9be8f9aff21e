"""jsonutil: pydantic models leave as pydantic's own JSON, byte for byte what their JSON-mode dump gives."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from pydantic import BaseModel, Field

from booking_rpc import jsonutil
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame


class Inner(BaseModel):
    at: dt.datetime
    amount: Decimal


class Outer(BaseModel):
    id: uuid.UUID
    name: str
    items: list[Inner]
    when: dt.date | None = None
    kind: str = Field(alias="type")


def sample(name: str = "猫🐕 naïve") -> Outer:
    inner = Inner(at=dt.datetime(2030, 1, 1, 9, 30, 0, 120000, tzinfo=dt.UTC), amount=Decimal("12.50"))
    return Outer(id=uuid.UUID(int=7), name=name, items=[inner, inner], when=dt.date(2030, 1, 2), type="x")


def test_a_model_serialises_as_its_json_mode_dump() -> None:
    model = sample()
    plain = model.model_dump(mode="json", by_alias=True)
    assert jsonutil.dumps(model) == jsonutil.dumps(plain)
    assert jsonutil.dumps({"response": model, "id": "1"}) == jsonutil.dumps({"response": plain, "id": "1"})
    assert jsonutil.loads(jsonutil.dumps(model))["items"][0] == {"at": "2030-01-01T09:30:00.120000Z", "amount": "12.50"}


def test_a_model_holding_a_lone_surrogate_still_frames_like_json_stringify() -> None:
    model = sample(name="a\ud800b")
    frame = encode_frame({"response": model, "id": "1"})
    assert b'"name":"a\\ud800b"' in frame
    [message] = JsonFrameDecoder().feed(frame)
    assert message["response"]["name"] == "a\ud800b"
