"""The one error shape every failure takes on the wire.

A NestJS gateway maps `statusCode` straight to HTTP, and `code` is stable for clients to branch on.
"""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE: dict[str, int] = {
    "VALIDATION_FAILED": 400,
    "BAD_REQUEST": 400,
    "PAYLOAD_TOO_LARGE": 413,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "SLOT_FULL": 409,
    "SLOT_BLOCKED": 409,
    "SLOT_IN_PAST": 409,
    "SERVICE_NOT_BOOKABLE": 409,  # the clinic service takes no bookings (not SERVICE_UNAVAILABLE, 503: us)
    "AVAILABILITY_EXCEPTION": 409,
    "TOO_SOON": 409,
    "TOO_FAR_AHEAD": 409,
    "ALREADY_HELD": 409,
    "ILLEGAL_TRANSITION": 409,
    "CANCEL_NOT_ALLOWED": 409,
    "RESCHEDULE_NOT_ALLOWED": 409,
    "LOCK_MISMATCH": 409,
    "ALREADY_CONFIRMED": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "BOOKING_NOT_COMPLETED": 409,
    "ALREADY_REVIEWED": 409,
    "RESERVATION_EXPIRED": 410,
    "TOO_MANY_HOLDS": 429,
    "RATE_LIMITED": 429,
    "INTERNAL": 500,
    "SERVICE_UNAVAILABLE": 503,
    "OVERLOADED": 503,
    "TIMEOUT": 504,
}


class RpcError(Exception):
    """A failure the caller should see, with a stable code and an HTTP-like status."""

    def __init__(
        self,
        code: str,
        message: str,
        details: Any = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status_code = status_code if status_code is not None else STATUS_BY_CODE.get(code, 500)

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "status": "error",
            "statusCode": self.status_code,
            "code": self.code,
            "message": self.message,
        }
        if self.details is not None:
            err["details"] = self.details
        return err

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r}, status_code={self.status_code})"


def not_found(what: str, details: Any = None) -> RpcError:
    return RpcError("NOT_FOUND", f"{what} not found", details)


INTERNAL_ERROR = RpcError("INTERNAL", "Internal server error")
OVERLOADED_ERROR = RpcError("OVERLOADED", "Too many requests in flight, try again later")
