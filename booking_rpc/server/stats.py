"""Plain counters the transport keeps; the metrics layer reads them at scrape time (no cost per request)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ServerStats:
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    frames_in: int = 0
    writes: int = 0  # socket writes of replies: below the replies sent when they share writes
    requests_total: int = 0
    events_total: int = 0
    events_failed: int = 0
    in_flight: int = 0
    overloaded: int = 0  # requests refused with OVERLOADED (max_requests_in_flight)
    unroutable_requests: int = 0
    unroutable_events: int = 0
    reply_encode_errors: int = 0
    frame_errors: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
