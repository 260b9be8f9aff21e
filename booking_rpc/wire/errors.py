"""The one error a decoder raises: the stream is broken and the connection must be closed.

NestJS never answers a framing error with a frame; it logs and ends the socket. We do the same, so the
error only has to say what went wrong (`kind`, stable for metrics and tests) and why (message text
mirroring NestJS's own exceptions, for logs).
"""

from __future__ import annotations

from typing import Any, Literal

FrameErrorKind = Literal["corrupted_length", "invalid_json", "frame_too_large", "invalid_payload"]


class FrameError(Exception):
    """A stream that cannot be decoded any further."""

    def __init__(self, kind: FrameErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: FrameErrorKind = kind
        self.message = message
        # Complete messages decoded from the same chunk before the failure; the caller may still
        # dispatch them, as NestJS does, before it closes the connection.
        self.messages: list[Any] = []

    def __repr__(self) -> str:
        return f"FrameError({self.kind!r}, {self.message!r})"


def corrupted_length(raw: str) -> FrameError:
    return FrameError("corrupted_length", f'Corrupted length value "{raw}" supplied in a packet')


def frame_too_large(length: int) -> FrameError:
    return FrameError("frame_too_large", f"The packet length ({length}) exceeds the maximum allowed length")


# The offending text goes into logs: keep enough to recognise it, not a whole 8 MiB frame.
_MAX_DATA_IN_MESSAGE = 200


def invalid_json(reason: str, data: str) -> FrameError:
    if len(data) > _MAX_DATA_IN_MESSAGE:
        data = data[:_MAX_DATA_IN_MESSAGE] + "..."
    return FrameError("invalid_json", f"Could not parse JSON: {reason}\nRequest data: {data}")


__all__ = ["FrameError", "FrameErrorKind", "corrupted_length", "frame_too_large", "invalid_json"]
