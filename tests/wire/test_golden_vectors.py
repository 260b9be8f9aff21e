"""Bytes captured between a real NestJS 12 client and server: we must read and write them exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame
from booking_rpc.wire.messages import (
    Event,
    Request,
    classify,
    disposed_reply,
    error_reply,
    event_message,
    no_handler_reply,
    request_message,
    response_reply,
)

VECTORS_PATH = Path(__file__).parent / "data" / "nestjs12-golden-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
CAPTURES: list[dict[str, Any]] = VECTORS["client_server_captures"]
PROBES: dict[str, dict[str, Any]] = {p["name"]: p for p in VECTORS["raw_probes_against_nest_server"]}

FRAMES = [
    pytest.param(capture[side], id=f"{capture['name']}-{side}")
    for capture in CAPTURES
    for side in ("request", "response", "event")
    if side in capture
]


def decode_one(raw: bytes) -> Any:
    messages = JsonFrameDecoder().feed(raw)
    assert len(messages) == 1
    return messages[0]


@pytest.mark.parametrize("frame", FRAMES)
def test_frame_decodes_and_reencodes_byte_for_byte(frame: dict[str, Any]) -> None:
    raw = bytes.fromhex(frame["hex"])
    assert raw == frame["bytes_text"].encode("utf-8")
    message = decode_one(raw)
    assert encode_frame(message) == raw
    # The prefix counts UTF-16 units, not bytes or code points.
    assert int(raw.split(b"#", 1)[0]) == frame["json_utf16_units"] == frame["length_prefix"]


@pytest.mark.parametrize("frame", FRAMES)
def test_frame_decodes_one_byte_at_a_time(frame: dict[str, Any]) -> None:
    raw = bytes.fromhex(frame["hex"])
    decoder = JsonFrameDecoder()
    messages: list[Any] = []
    for i in range(len(raw)):
        messages += decoder.feed(raw[i : i + 1])
        assert decoder.has_partial == (i < len(raw) - 1)
    assert messages == [decode_one(raw)]
    assert decoder.buffered_bytes == 0


def _expected_reply(name: str, request: Request) -> dict[str, Any]:
    """What our server must answer, built with our reply builders from what the Nest handler did."""
    if name == "request_ping":
        return response_reply(request.id, "pong")
    if name.startswith("request_echo") or name == "request_object_pattern":
        return response_reply(request.id, request.data)
    if name == "request_no_handler":
        return no_handler_reply(request.id)
    if name == "request_rpc_exception_object":
        return error_reply(request.id, request.data)  # RpcException(object): passed through as is
    if name == "request_rpc_exception_string":
        return error_reply(request.id, {"status": "error", "message": request.data})
    raise AssertionError(f"no expectation for {name}")


@pytest.mark.parametrize("capture", [c for c in CAPTURES if "response" in c], ids=lambda c: c["name"])
def test_reply_builders_write_the_nest_server_bytes(capture: dict[str, Any]) -> None:
    request = classify(decode_one(bytes.fromhex(capture["request"]["hex"])))
    assert isinstance(request, Request)
    reply = _expected_reply(capture["name"], request)
    assert encode_frame(reply) == bytes.fromhex(capture["response"]["hex"])


@pytest.mark.parametrize("capture", [c for c in CAPTURES if "request" in c], ids=lambda c: c["name"])
def test_request_builder_writes_the_nest_client_bytes(capture: dict[str, Any]) -> None:
    raw = bytes.fromhex(capture["request"]["hex"])
    sent = decode_one(raw)
    assert encode_frame(request_message(sent["pattern"], sent["data"], sent["id"])) == raw


def test_event_builder_normalises_an_object_pattern_like_client_emit() -> None:
    capture = next(c for c in CAPTURES if c["name"] == "event_object_pattern")
    # `node client.js emit --pattern '{"type":"booking","cmd":"created"}'`
    message = event_message({"type": "booking", "cmd": "created"}, {"a": 1})
    assert encode_frame(message) == bytes.fromhex(capture["event"]["hex"])
    event = classify(decode_one(bytes.fromhex(capture["event"]["hex"])))
    assert isinstance(event, Event)
    assert event.route == '{"cmd":"created","type":"booking"}'


def test_event_builder_with_a_string_pattern() -> None:
    capture = next(c for c in CAPTURES if c["name"] == "event_utf8")
    message = event_message("booking.confirmed", {"booking_id": "b-1", "text": "猫🐕"})
    assert encode_frame(message) == bytes.fromhex(capture["event"]["hex"])


# --- raw probes against a real Nest server ------------------------------------------------------------


def probe_bytes(name: str) -> bytes:
    probe = PROBES[name]
    raw = bytes.fromhex(probe["sent_hex"])
    assert raw == probe["sent_text"].encode("utf-8")
    return raw


def reply_bytes(name: str) -> bytes:
    return bytes.fromhex(PROBES[name]["reply_hex"])


def test_probe_utf16_prefix_multibyte() -> None:
    request = classify(decode_one(probe_bytes("utf16_prefix_multibyte")))
    assert isinstance(request, Request)
    assert request.data == "猫🐕"
    assert encode_frame(response_reply(request.id, request.data)) == reply_bytes("utf16_prefix_multibyte")


def test_probe_utf8_byte_prefix_breaks_the_stream_like_nest() -> None:
    # 44 counts UTF-8 bytes; the frame really is 40 units, so 44 units swallow `37#{` of the next frame.
    assert PROBES["utf8_byte_prefix_then_ping"]["server_closed_connection"] is True
    decoder = JsonFrameDecoder()
    with pytest.raises(FrameError) as info:
        decoder.feed(probe_bytes("utf8_byte_prefix_then_ping"))
    assert info.value.kind == "invalid_json"
    assert info.value.messages == []


def test_probe_pipelined_two_frames_one_write() -> None:
    messages = JsonFrameDecoder().feed(probe_bytes("pipelined_two_frames_one_write"))
    requests = [classify(m) for m in messages]
    assert [(r.route, r.data) for r in requests] == [("ping", {}), ("echo", [1, 2])]
    replies = encode_frame(response_reply("a", "pong")) + encode_frame(response_reply("b", [1, 2]))
    assert replies == reply_bytes("pipelined_two_frames_one_write")


def test_probe_split_inside_utf8_sequence() -> None:
    raw = probe_bytes("split_inside_utf8_sequence")
    cut = PROBES["split_inside_utf8_sequence"]["split_after_byte"]
    assert 0x80 <= raw[cut] < 0xC0  # really inside the 4-byte sequence of U+1F415
    decoder = JsonFrameDecoder()
    assert decoder.feed(raw[:cut]) == []
    assert decoder.has_partial
    [message] = decoder.feed(raw[cut:])
    assert not decoder.has_partial
    assert encode_frame(response_reply(message["id"], message["data"])) == reply_bytes("split_inside_utf8_sequence")


def test_probe_numeric_id_is_echoed_as_a_number() -> None:
    request = classify(decode_one(probe_bytes("numeric_id")))
    assert isinstance(request, Request)
    assert request.id == 7
    assert encode_frame(response_reply(request.id, request.data)) == reply_bytes("numeric_id")


def test_probe_request_without_data_completes_without_response_key() -> None:
    request = classify(decode_one(probe_bytes("request_without_data")))
    assert isinstance(request, Request)
    assert request.data is None
    assert encode_frame(disposed_reply(request.id)) == reply_bytes("request_without_data")


def test_probe_event_then_request_in_one_write() -> None:
    messages = JsonFrameDecoder().feed(probe_bytes("event_unknown_pattern_then_ping"))
    event, request = (classify(m) for m in messages)
    assert isinstance(event, Event)
    assert event.route == "nobody.listens"
    assert isinstance(request, Request)
    assert encode_frame(response_reply(request.id, "pong")) == reply_bytes("event_unknown_pattern_then_ping")


@pytest.mark.parametrize(
    ("name", "kind"),
    [("non_numeric_length_prefix", "corrupted_length"), ("invalid_json_body", "invalid_json")],
)
def test_probe_broken_streams_raise(name: str, kind: str) -> None:
    assert PROBES[name]["server_closed_connection"] is True
    decoder = JsonFrameDecoder()
    with pytest.raises(FrameError) as info:
        decoder.feed(probe_bytes(name))
    assert info.value.kind == kind
    # The decoder is dead afterwards: the connection is closing.
    with pytest.raises(FrameError):
        decoder.feed(b"2#{}")


def test_every_probe_is_covered() -> None:
    covered = {
        "utf16_prefix_multibyte",
        "utf8_byte_prefix_then_ping",
        "pipelined_two_frames_one_write",
        "split_inside_utf8_sequence",
        "numeric_id",
        "request_without_data",
        "event_unknown_pattern_then_ping",
        "non_numeric_length_prefix",
        "invalid_json_body",
    }
    assert set(PROBES) == covered
