"""What both frame decoders share: a buffer fed chunk by chunk, complete messages out in order, and one rule
for a broken stream (NestJS's): the FrameError carries the messages completed before it in that chunk, and
the decoder stays dead, every later `feed` raising it again with no messages.

A decoder says only how its frames are cut (`_decode`) and what its offsets do when the consumed bytes are
dropped (`_consumed`).
"""

from __future__ import annotations

from typing import Any

from booking_rpc.wire.errors import FrameError


class FrameBuffer:
    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def has_partial(self) -> bool:
        """True while bytes of an incomplete frame are buffered (the incomplete-message timeout)."""
        return bool(self._buf)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Messages completed by `data`, in order. Raises FrameError (with `.messages`) on a broken stream."""
        if self._error is not None:
            self._error.messages = []
            raise self._error
        buf = self._buf
        buf += data
        messages: list[Any] = []
        try:
            consumed = self._decode(buf, messages)
        except FrameError as exc:
            self._error = exc
            exc.messages = messages
            buf.clear()
            raise
        if consumed:
            del buf[:consumed]
            self._consumed(consumed)
        return messages

    def _decode(self, buf: bytearray, messages: list[Any]) -> int:
        """Append the messages of the complete frames at the start of `buf`; the bytes they took."""
        raise NotImplementedError

    def _consumed(self, count: int) -> None:
        """`count` bytes were dropped from the start of the buffer (offsets into it move back)."""


__all__ = ["FrameBuffer"]
