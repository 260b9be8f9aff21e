"""One interface over both wire codecs, so the server never needs to know which one a listener speaks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

from booking_rpc.wire.json_codec import DEFAULT_MAX_FRAME_UNITS, JsonFrameDecoder, encode_frame
from booking_rpc.wire.msgpack_codec import DEFAULT_MAX_FRAME_BYTES, MsgpackFrameDecoder, encode_msgpack_frame


class FrameDecoder(Protocol):
    """Bytes in, complete messages out; raises FrameError once the stream is broken."""

    @property
    def has_partial(self) -> bool: ...

    @property
    def buffered_bytes(self) -> int: ...

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]: ...


class Codec(Protocol):
    @property
    def name(self) -> str:
        """Short name for settings and logs: "json" or "msgpack"."""
        ...

    def new_decoder(self, max_frame: int | None = None) -> FrameDecoder:
        """A decoder for one connection; `max_frame` in the codec's own unit (JSON: UTF-16 units)."""
        ...

    def encode(self, message: Any) -> bytes: ...


@dataclass(frozen=True, slots=True)
class JsonCodec:
    """NestJS's own transport: `<len>#<json>`."""

    name: str = "json"
    max_frame: int = DEFAULT_MAX_FRAME_UNITS

    def new_decoder(self, max_frame: int | None = None) -> FrameDecoder:
        return JsonFrameDecoder(self.max_frame if max_frame is None else max_frame)

    encode = staticmethod(encode_frame)  # every reply is encoded here: no method frame around it


@dataclass(frozen=True, slots=True)
class MsgpackCodec:
    """4-byte big-endian length + msgpack, for Python peers that want a denser encoding."""

    name: str = "msgpack"
    max_frame: int = DEFAULT_MAX_FRAME_BYTES

    def new_decoder(self, max_frame: int | None = None) -> FrameDecoder:
        return MsgpackFrameDecoder(self.max_frame if max_frame is None else max_frame)

    def encode(self, message: Any) -> bytes:
        return encode_msgpack_frame(message)


JSON_CODEC: Final[Codec] = JsonCodec()
MSGPACK_CODEC: Final[Codec] = MsgpackCodec()
CODECS: Final[dict[str, Codec]] = {JSON_CODEC.name: JSON_CODEC, MSGPACK_CODEC.name: MSGPACK_CODEC}

__all__ = ["CODECS", "JSON_CODEC", "MSGPACK_CODEC", "Codec", "FrameDecoder", "JsonCodec", "MsgpackCodec"]
