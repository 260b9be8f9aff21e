"""Request/event classification and reply shapes, key order included (nestjs-tcp.md §2)."""

from __future__ import annotations

from typing import Any

import pytest

from booking_rpc.wire.json_codec import encode_frame
from booking_rpc.wire.messages import (
    NO_HANDLER_MESSAGE,
    Event,
    Request,
    classify,
    disposed_reply,
    error_reply,
    event_message,
    no_handler_reply,
    request_message,
    response_reply,
    stream_item_reply,
)

REPLY_KEYS = {"id", "err", "response", "isDisposed", "status"}


def test_message_with_id_is_a_request() -> None:
    message = {"pattern": {"role": "x", "cmd": "y"}, "data": [1], "metadata": {"trace": "t"}, "id": "abc"}
    assert classify(message) == Request(
        pattern={"role": "x", "cmd": "y"},
        route='{"cmd":"y","role":"x"}',
        data=[1],
        id="abc",
        metadata={"trace": "t"},
    )


@pytest.mark.parametrize("id_", [None, 7, 0, "", "x"])
def test_any_id_value_makes_a_request_and_keeps_its_type(id_: Any) -> None:
    request = classify({"pattern": "p", "data": 1, "id": id_})
    assert isinstance(request, Request)
    assert request.id == id_ and type(request.id) is type(id_)


def test_message_without_id_is_an_event() -> None:
    assert classify({"pattern": "user.updated", "data": {"a": 1}}) == Event(
        pattern="user.updated", route="user.updated", data={"a": 1}, metadata=None
    )


def test_missing_data_is_none() -> None:
    request = classify({"pattern": "echo", "id": "4"})
    assert isinstance(request, Request)
    assert request.data is None


@pytest.mark.parametrize("message", [{"id": "1"}, {}, {"foo": 1, "id": 2}])
def test_packet_with_neither_pattern_nor_data_is_an_anonymous_event(message: dict[str, Any]) -> None:
    event = classify(message)
    assert isinstance(event, Event)
    assert event.pattern is None and event.route is None


@pytest.mark.parametrize("message", [[1, 2], "text", 5, True])
def test_non_object_message_is_an_anonymous_event(message: Any) -> None:
    assert classify(message) == Event(pattern=None, route=None, data=message, metadata=None)


def test_null_pattern_request_has_no_route() -> None:
    request = classify({"pattern": None, "data": 1, "id": "1"})
    assert isinstance(request, Request) and request.route is None


def test_non_object_metadata_is_dropped() -> None:
    request = classify({"pattern": "p", "metadata": "x", "id": "1"})
    assert isinstance(request, Request) and request.metadata is None


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        (response_reply("abc", 6), b'{"response":6,"isDisposed":true,"id":"abc"}'),
        (response_reply("n1", None), b'{"response":null,"isDisposed":true,"id":"n1"}'),
        (disposed_reply("u1"), b'{"isDisposed":true,"id":"u1"}'),
        (stream_item_reply(None, 1), b'{"response":1,"id":null}'),
        (
            error_reply("e", {"status": "error", "message": 42}),
            b'{"err":{"status":"error","message":42},"isDisposed":true,"id":"e"}',
        ),
        (
            no_handler_reply("x1"),
            b'{"id":"x1","status":"error","err":"' + NO_HANDLER_MESSAGE.encode() + b'"}',
        ),
    ],
)
def test_reply_frames_are_nest_exact(reply: dict[str, Any], body: bytes) -> None:
    assert encode_frame(reply) == b"%d#%b" % (len(body), body)
    assert set(reply) <= REPLY_KEYS


def test_sample_frame_from_the_protocol_notes() -> None:
    assert encode_frame(response_reply("abc", 6)) == b'43#{"response":6,"isDisposed":true,"id":"abc"}'


def test_request_message_key_order_with_metadata() -> None:
    message = request_message("p", {"a": 1}, "id1", metadata={"trace": "t"})
    assert list(message) == ["pattern", "data", "metadata", "id"]
    assert list(request_message("p", None, "id1")) == ["pattern", "data", "id"]


def test_event_message_sends_the_normalised_pattern() -> None:
    assert event_message({"z": 1, "cmd": "ev"}, None) == {"pattern": '{"cmd":"ev","z":1}', "data": None}
    assert event_message("a.b", 1, metadata={"k": "v"}) == {
        "pattern": "a.b",
        "data": 1,
        "metadata": {"k": "v"},
    }
