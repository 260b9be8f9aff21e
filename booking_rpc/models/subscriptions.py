"""Dynamic event subscriptions: a NestJS TCP microservice asks to receive some of our events."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from booking_rpc.models.common import ActorRequest

PATTERN = re.compile(r"^(\*|[a-z0-9_.-]+\*?)$")


class SubscriptionCreateRequest(ActorRequest):
    name: str = Field(min_length=1, max_length=100)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    patterns: list[str] = Field(min_length=1, max_length=50, description="event types; a trailing * is a prefix")
    codec: Literal["json", "msgpack"] = "json"

    @field_validator("patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for p in value:
            if not PATTERN.match(p):
                raise ValueError(f"{p!r} is not an event type or a prefix pattern like 'booking.*'")
        return value


class SubscriptionDeleteRequest(ActorRequest):
    name: str = Field(min_length=1, max_length=100)


class SubscriptionsFindRequest(ActorRequest):
    pass


class SubscriptionOut(BaseModel):
    id: UUID
    name: str
    host: str
    port: int
    patterns: list[str]
    codec: str
    created_at: dt.datetime


class SubscriptionsList(BaseModel):
    items: list[SubscriptionOut]


class SubscriptionDeleted(BaseModel):
    name: str
    deleted: bool
