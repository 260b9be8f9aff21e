"""Who receives which events: static subscribers from configuration, dynamic ones from the database.

`BOOKING_RPC_SUBSCRIBERS="notifications=127.0.0.1:4001:booking.*,payment.processed;audit=10.0.0.5:4002:*"`
A pattern is an event type, or a prefix followed by `*` (`booking.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from booking_rpc.db.queries import Queries


class SubscriberSpecError(ValueError):
    """BOOKING_RPC_SUBSCRIBERS could not be parsed; the message says which entry."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    name: str
    host: str
    port: int
    patterns: tuple[str, ...]
    codec: str = "json"  # json | msgpack over TCP; JETSTREAM: the relay's JetStream sink, not a TCP peer

    def matches(self, event_type: str) -> bool:
        return any(event_type.startswith(p[:-1]) if p.endswith("*") else event_type == p for p in self.patterns)

    def like_patterns(self) -> list[str]:
        """The patterns as SQL LIKE patterns (the relay selects with `event_type LIKE ANY(...)`)."""
        out = []
        for p in self.patterns:
            escaped = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(escaped[:-1] + "%" if escaped.endswith("*") else escaped)
        return out


JETSTREAM = "jetstream"


def jetstream_subscriber(stream: str) -> Subscriber:
    """The JetStream sink as the relay sees it: one more subscriber, of every event type."""
    return Subscriber(f"jetstream:{stream}", "", 0, ("*",), JETSTREAM)


def parse_subscribers(spec: str) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    for entry in (e.strip() for e in spec.replace("\n", ";").split(";")):
        if not entry:
            continue
        name, sep, target = entry.partition("=")
        parts = target.split(":", 2)
        if not sep or not name.strip() or len(parts) != 3:
            raise SubscriberSpecError(f"subscriber {entry!r}: expected name=host:port:pattern[,pattern...]")
        host, port_text, patterns_text = parts
        try:
            port = int(port_text)
        except ValueError:
            raise SubscriberSpecError(f"subscriber {entry!r}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise SubscriberSpecError(f"subscriber {entry!r}: port {port} is out of range")
        patterns = tuple(p.strip() for p in patterns_text.split(",") if p.strip())
        if not patterns:
            raise SubscriberSpecError(f"subscriber {entry!r}: no event patterns")
        subscribers.append(Subscriber(name.strip(), host.strip(), port, patterns))
    names = [s.name for s in subscribers]
    if len(names) != len(set(names)):
        raise SubscriberSpecError("subscriber names must be unique")
    return subscribers


async def load_dynamic(conn: asyncpg.Connection, sql: Queries) -> list[Subscriber]:
    rows = await conn.fetch(sql["outbox.subscriptions"])
    return [Subscriber(r["name"], r["host"], r["port"], tuple(r["patterns"]), r["codec"]) for r in rows]
