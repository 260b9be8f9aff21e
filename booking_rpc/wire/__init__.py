"""Sans-IO wire layer: bytes <-> frames <-> messages, and NestJS pattern normalisation. No asyncio here."""

from booking_rpc.wire.codec import CODECS, JSON_CODEC, MSGPACK_CODEC, Codec, FrameDecoder
from booking_rpc.wire.errors import FrameError
from booking_rpc.wire.json_codec import JsonFrameDecoder, encode_frame, frame_json
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
    stream_item_reply,
)
from booking_rpc.wire.msgpack_codec import MsgpackFrameDecoder, encode_msgpack_frame
from booking_rpc.wire.patterns import route_for_registration, route_of

__all__ = [
    "CODECS",
    "JSON_CODEC",
    "MSGPACK_CODEC",
    "Codec",
    "Event",
    "FrameDecoder",
    "FrameError",
    "JsonFrameDecoder",
    "MsgpackFrameDecoder",
    "Request",
    "classify",
    "disposed_reply",
    "encode_frame",
    "encode_msgpack_frame",
    "error_reply",
    "event_message",
    "frame_json",
    "no_handler_reply",
    "request_message",
    "response_reply",
    "route_for_registration",
    "route_of",
    "stream_item_reply",
]
