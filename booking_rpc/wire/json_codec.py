"""NestJS JsonSocket framing: `<len>#<json>`, where len is the JS length (UTF-16 units) of the JSON text.

Sans-IO: `encode_frame` turns a message into bytes to write, `JsonFrameDecoder.feed` turns bytes read into
messages. Neither knows about sockets, so every edge case (splits anywhere, several frames per read,
garbage) is a plain unit test.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import orjson
from pydantic import BaseModel

from booking_rpc.jsonutil import default
from booking_rpc.wire.errors import FrameError, corrupted_length, frame_too_large, invalid_json
from booking_rpc.wire.framing import FrameBuffer
from booking_rpc.wire.utf16 import js_parse_int, sequence_length, utf16_units

DEFAULT_MAX_FRAME_UNITS: Final = 8 * 1024 * 1024
# A decimal length prefix for any frame we accept fits in a few bytes; NestJS allows any length of
# prefix, we stop a peer that streams digits (or garbage) without ever sending '#'.
MAX_PREFIX_BYTES: Final = 32

_ORJSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


# --- encoding ---------------------------------------------------------------------------------------


def encode_json(message: Any) -> bytes:
    """`message` as JSON.stringify writes it, in UTF-8 (a TCP frame's body, a NATS message's payload).

    Raises TypeError if the message cannot be serialised (NestJS then logs and sends no reply).
    """
    try:
        return orjson.dumps(message, default=default, option=_ORJSON_OPTIONS)
    except TypeError as exc:
        # orjson refuses str with lone surrogates; JS strings may hold them and JSON.stringify escapes
        # them. Anything else is a real serialisation error.
        if "surrogates" not in str(exc):
            raise
        return _dumps_with_surrogates(message)


def encode_frame(message: Any) -> bytes:
    """One frame carrying `message`, byte for byte what JSON.stringify + JsonSocket would write (frame_json's
    prefix written here: one call fewer for every reply)."""
    payload = encode_json(message)
    return b"%d#%b" % (len(payload) if payload.isascii() else utf16_units(payload), payload)


def frame_json(payload: bytes) -> bytes:
    """Prefix already-serialised UTF-8 JSON text with its length in UTF-16 units."""
    return b"%d#%b" % (utf16_units(payload), payload)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps_with_surrogates(message: Any) -> bytes:
    """The rare path: JSON.stringify semantics for text holding lone surrogates."""
    text = json.dumps(_to_plain_json(message), ensure_ascii=False, separators=(",", ":"))
    # A Python str may hold a high+low pair as two code points; a JS string would see one character and
    # write it raw. The UTF-16 round trip joins such pairs and leaves the lone ones.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8")


def _to_plain_json(value: Any) -> Any:
    """Plain dict/list/str/int/float/bool/None, converting other types the way `encode_frame` does."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # orjson and JSON.stringify both write null
    if isinstance(value, dict):
        return {_plain_key(k): _to_plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_plain_json(v) for v in value]
    if isinstance(value, BaseModel):
        return _to_plain_json(value.model_dump(mode="json", by_alias=True))
    # UUID, datetime, Decimal, dataclasses, enums...: let orjson decide their JSON form.
    return orjson.loads(orjson.dumps(value, default=default, option=_ORJSON_OPTIONS))


def _plain_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return str(orjson.loads(orjson.dumps({key: 0}, default=default, option=_ORJSON_OPTIONS)).popitem()[0])


# --- decoding ---------------------------------------------------------------------------------------


class JsonFrameDecoder(FrameBuffer):
    """Incremental `<len>#<json>` decoder for one connection.

    Keeps one bytearray and offsets into it, so a frame arriving in many small reads costs O(n): the '#'
    search resumes where it stopped, a frame's units are counted once, and consumed bytes are dropped
    once per `feed`. After a FrameError the decoder is dead: every further `feed` raises it again.
    """

    __slots__ = (
        "_body_start",
        "_counted_pos",
        "_counted_units",
        "_length",
        "_max",
        "_scan",
    )

    def __init__(self, max_frame_units: int = DEFAULT_MAX_FRAME_UNITS) -> None:
        super().__init__()
        self._max = max_frame_units
        self._scan = 0  # where the search for '#' resumes
        self._length = -1  # declared units of the frame being read; -1 while reading the prefix
        self._body_start = 0
        self._counted_pos = 0  # bytes of the body counted so far end here ...
        self._counted_units = 0  # ... and hold this many UTF-16 units

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        # A read that starts at a frame boundary with nothing buffered (a request per read, or several whole
        # ones) is cut straight from `data`: whole ASCII frames, whose units are their bytes. Anything else (a
        # partial frame, non-ASCII) goes the general way from where this stopped; a prefix is read by the one
        # parser both ways share (_frame_prefix), so a bad one fails here as it would there. ~250 fewer
        # bytecodes a frame.
        if self._buf or self._error is not None or type(data) is not bytes:
            return super().feed(data)
        messages: list[Any] = []
        start = 0
        size = len(data)
        try:
            while True:
                hash_at, length = _frame_prefix(data, start, start, self._max)
                if hash_at < 0:
                    break
                end = hash_at + 1 + length
                if end > size:
                    break
                body = data[hash_at + 1 : end]
                if not body.isascii():
                    break
                messages.append(_parse_body(body))
                start = end
                if start == size:
                    return messages
        except FrameError as exc:  # as the general way fails: the decoder is dead, with what came before
            self._error = exc
            exc.messages = messages
            raise
        try:
            messages += super().feed(data[start:] if start else data)
        except FrameError as exc:
            exc.messages = messages + exc.messages
            raise
        return messages

    def _decode(self, buf: bytearray, messages: list[Any]) -> int:
        start = 0  # first byte not consumed yet
        while True:
            if self._length < 0 and not self._read_prefix(start):
                return start
            end = self._find_end()
            if end < 0:
                return start
            messages.append(_parse_body(buf[self._body_start : end]))
            start = self._scan = end
            self._length = -1

    def _consumed(self, count: int) -> None:
        self._scan -= count
        self._body_start -= count
        self._counted_pos -= count

    def _read_prefix(self, start: int) -> bool:
        """Parse `<len>#` at `start`; False when the '#' has not arrived yet."""
        hash_at, length = _frame_prefix(self._buf, start, self._scan, self._max)
        if hash_at < 0:
            self._scan = len(self._buf)
            return False
        self._length = length
        self._body_start = self._counted_pos = hash_at + 1
        self._counted_units = 0
        return True

    def _find_end(self) -> int:
        """Byte offset just past the current frame's body, or -1 while it is incomplete."""
        buf = self._buf
        length = self._length
        pos = self._counted_pos
        units = self._counted_units
        # `remaining` units take at least `remaining` bytes (1 to 3 bytes per unit), so count in blocks of
        # exactly that size: an ASCII block finishes the frame at once (the common case, no counting).
        while units < length:
            block_end = pos + (length - units)
            if block_end > len(buf):
                self._counted_pos, self._counted_units = pos, units
                return -1
            block = buf[pos:block_end]
            units += len(block) if block.isascii() else utf16_units(block)
            pos = block_end
        self._counted_pos, self._counted_units = pos, units
        if units > length:
            # The last block ended on the lead byte of a 4-byte sequence needing one unit: JS cuts the
            # text between the two halves of a surrogate pair, which can never be valid JSON.
            raise invalid_json("Unterminated string in JSON (frame ends inside a surrogate pair)", "")
        # Units are counted on lead bytes: the last character may still have continuation bytes.
        last = buf[pos - 1]
        if last < 0x80:
            return pos
        lead_at = pos - 1
        while lead_at > self._body_start and 0x80 <= buf[lead_at] < 0xC0 and pos - lead_at < 4:
            lead_at -= 1
        end = max(pos, lead_at + sequence_length(buf[lead_at]))
        return end if end <= len(buf) else -1


def _frame_prefix(buf: bytes | bytearray, start: int, scan: int, max_units: int) -> tuple[int, int]:
    """The `<len>#` prefix at `start` (its '#' not before `scan`): the '#''s offset and the declared length,
    or (-1, 0) while the '#' has not arrived. The one parser of a prefix, for both ways a frame is read.

    Raises FrameError for a prefix longer than MAX_PREFIX_BYTES (with or without its '#'), one parseInt calls
    NaN (a plain decimal is read as is, any other as parseInt reads it), a length over `max_units`, and a
    length of 0 or less (JS takes an empty substring and JSON.parse('') fails)."""
    hash_at = buf.find(b"#", scan, start + MAX_PREFIX_BYTES + 1)
    if hash_at < 0:
        if len(buf) - start > MAX_PREFIX_BYTES:
            raise corrupted_length(_printable(buf[start : start + MAX_PREFIX_BYTES]) + "...")
        return -1, 0
    prefix = buf[start:hash_at]
    length = int(prefix) if prefix.isdigit() else _lenient_length(prefix)
    if length > max_units:
        raise frame_too_large(length)
    if length <= 0:
        raise invalid_json("Unexpected end of JSON input", "")
    return hash_at, length


def _lenient_length(prefix: bytes | bytearray) -> int:
    text = prefix.decode("utf-8", "replace")
    length = js_parse_int(text)
    if length is None:
        raise corrupted_length(text)
    return length


def _printable(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", "replace")


def parse_json(body: bytes | bytearray | memoryview) -> Any:
    """JSON.parse of UTF-8 text; raises FrameError (kind invalid_json) for what JSON.parse refuses."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _parse_like_js(body)


def _parse_body(body: bytes | bytearray) -> Any:
    value = parse_json(body)
    if type(value) is dict:  # every message of a NestJS client: none of the falsy values below
        return value
    # JsonSocket: `JSON.parse(message) || {}`, so a falsy body (null, false, 0, "") becomes {}.
    if value is None or value is False or value == "" or (type(value) in (int, float) and value == 0):
        return {}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Unexpected token {name[0]} in JSON")


def _parse_like_js(body: bytes | bytearray | memoryview) -> Any:
    """JSON.parse for what orjson refuses but JS accepts: mostly lone surrogate escapes ("\\ud83d")."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_json(f"invalid UTF-8: {exc.reason}", bytes(body).decode("utf-8", "replace")) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise invalid_json(str(exc), text) from None


__all__ = [
    "DEFAULT_MAX_FRAME_UNITS",
    "MAX_PREFIX_BYTES",
    "FrameError",
    "JsonFrameDecoder",
    "encode_frame",
    "encode_json",
    "frame_json",
    "parse_json",
]
