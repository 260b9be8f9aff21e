"""The msgpack codec: 4-byte big-endian length + msgpack, same message shapes as JSON."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from booking_rpc import jsonutil
from booking_rpc.wire.codec import CODECS, JSON_CODEC, MSGPACK_CODEC, Codec
from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.messages import response_reply
from booking_rpc.wire.msgpack_codec import MsgpackFrameDecoder, encode_msgpack_frame


def test_frame_layout() -> None:
    frame = encode_msgpack_frame({"a": 1})
    body = msgpack.packb({"a": 1})
    assert frame == struct.pack(">I", len(body)) + body


def test_values_leave_as_their_json_forms() -> None:
    class Slot(BaseModel):
        price: Decimal
        starts_at: dt.datetime

    when = dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC)
    message = {
        "money": Decimal("12.50"),
        "id": uuid.UUID(int=5),
        "day": dt.date(2024, 3, 31),
        "at": when,
        "time": dt.time(9, 15),
        "slot": Slot(price=Decimal("3.10"), starts_at=when),
        "tuple": (1, 2),
        "set": {3},
        "duration": dt.timedelta(minutes=1, microseconds=5),
        "prebuilt": orjson.Fragment(b'{"from":"postgres"}'),
    }
    [decoded] = MsgpackFrameDecoder().feed(encode_msgpack_frame(message))
    assert decoded == orjson.loads(jsonutil.dumps(message))  # the JSON codec's one default decides
    assert decoded == {
        "money": "12.50",
        "id": "00000000-0000-0000-0000-000000000005",
        "day": "2024-03-31",
        "at": "2024-03-31T01:30:00+00:00",
        "time": "09:15:00",
        "slot": {"price": "3.10", "starts_at": "2024-03-31T01:30:00Z"},
        "tuple": [1, 2],
        "set": [3],
        "duration": 60.000005,
        "prebuilt": {"from": "postgres"},
    }


def test_unserialisable_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_msgpack_frame({"x": object()})


def test_partial_and_pipelined_frames() -> None:
    stream = encode_msgpack_frame(response_reply("a", 1)) + encode_msgpack_frame(response_reply("b", "é😀"))
    decoder = MsgpackFrameDecoder()
    assert decoder.feed(stream[:3]) == []
    assert decoder.has_partial and decoder.buffered_bytes == 3
    assert decoder.feed(stream[3:-1]) == [response_reply("a", 1)]
    assert decoder.feed(stream[-1:]) == [response_reply("b", "é😀")]
    assert not decoder.has_partial


def test_declared_length_over_limit_is_refused_from_the_header() -> None:
    decoder = MsgpackFrameDecoder(max_frame_bytes=100)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameError) as info:
        decoder.feed(b"\x00\x65")
    assert info.value.kind == "frame_too_large"
    with pytest.raises(FrameError):
        decoder.feed(encode_msgpack_frame({}))


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xc1",  # never-used type byte
        b"\x81\xa1a",  # map missing its value
        b"\x01\x02",  # extra data after the object
        msgpack.packb(msgpack.ExtType(5, b"x")),
    ],
)
def test_invalid_payload(body: bytes) -> None:
    with pytest.raises(FrameError) as info:
        MsgpackFrameDecoder().feed(struct.pack(">I", len(body)) + body)
    assert info.value.kind == "invalid_payload"


def test_msgpack_timestamp_arrives_as_an_aware_datetime() -> None:
    body = msgpack.packb({"at": msgpack.Timestamp(1)})
    [message] = MsgpackFrameDecoder().feed(struct.pack(">I", len(body)) + body)
    assert message == {"at": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)}


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_values, min_size=1, max_size=4), st.data())
def test_round_trip_under_any_chunking(messages: list[Any], data: st.DataObject) -> None:
    stream = b"".join(encode_msgpack_frame(m) for m in messages)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=10)))
    decoder = MsgpackFrameDecoder()
    decoded: list[Any] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[a:b])
    assert decoded == messages
    assert not decoder.has_partial


@pytest.mark.parametrize("codec", [JSON_CODEC, MSGPACK_CODEC])
def test_codecs_are_interchangeable(codec: Codec) -> None:
    assert CODECS[codec.name] is codec
    decoder = codec.new_decoder()
    frame = codec.encode(response_reply("id", {"v": "猫"}))
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(frame[5:]) == [{"response": {"v": "猫"}, "isDisposed": True, "id": "id"}]
    small = codec.new_decoder(max_frame=4)
    with pytest.raises(FrameError) as info:
        small.feed(frame)
    assert info.value.kind == "frame_too_large"
