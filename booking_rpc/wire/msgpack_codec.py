"""The second codec: a 4-byte big-endian unsigned length, then a msgpack document.

The documents have the same shapes as the JSON codec's (requests, events, replies), so everything above
the codec is shared. A value msgpack has no type for leaves as its JSON form (jsonutil.json_form: the
JSON codec's one `default`), so a handler's reply means the same thing over either codec.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from booking_rpc.jsonutil import json_form
from booking_rpc.wire.errors import FrameError, frame_too_large
from booking_rpc.wire.framing import FrameBuffer

DEFAULT_MAX_FRAME_BYTES: Final = 8 * 1024 * 1024
HEADER: Final = struct.Struct(">I")


def encode_msgpack_frame(message: Any) -> bytes:
    """One frame carrying `message`. Raises TypeError if it cannot be serialised."""
    body: bytes = msgpack.packb(message, default=json_form, use_bin_type=True, datetime=False)
    if len(body) > 0xFFFFFFFF:
        raise ValueError("a msgpack frame cannot exceed 4 GiB")
    return HEADER.pack(len(body)) + body


def _refuse_ext(code: int, data: bytes) -> Any:
    # Extension types have no JSON counterpart in our message shapes.
    raise ValueError(f"msgpack extension type {code} is not allowed")


class MsgpackFrameDecoder(FrameBuffer):
    """Incremental decoder for length-prefixed msgpack frames; same API as JsonFrameDecoder."""

    __slots__ = ("_length", "_max")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__()
        self._max = max_frame_bytes
        self._length = -1  # body length of the frame being read; -1 while reading the header

    def _decode(self, buf: bytearray, messages: list[Any]) -> int:
        start = 0
        while True:
            if self._length < 0:
                if len(buf) - start < HEADER.size:
                    return start
                (length,) = HEADER.unpack_from(buf, start)
                if length > self._max:
                    raise frame_too_large(length)
                if length == 0:
                    raise FrameError("invalid_payload", "Empty msgpack frame")
                self._length = length
            body_start = start + HEADER.size
            end = body_start + self._length
            if end > len(buf):
                return start
            messages.append(_unpack(buf[body_start:end]))
            start = end
            self._length = -1


def _unpack(body: bytearray) -> Any:
    try:
        # A msgpack timestamp arrives as an aware UTC datetime, which handlers' models accept.
        return msgpack.unpackb(body, raw=False, ext_hook=_refuse_ext, timestamp=3)
    except Exception as exc:  # msgpack raises a zoo of types (ExtraData, FormatError, ValueError, ...)
        raise FrameError("invalid_payload", f"Could not parse msgpack: {exc}") from None


__all__ = ["DEFAULT_MAX_FRAME_BYTES", "MsgpackFrameDecoder", "encode_msgpack_frame"]
