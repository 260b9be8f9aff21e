"""Which reminders a booking gets, and when.

- `upcoming`: 24 h before the slot starts;
- `check_in`: at the start;
- `review_request`: 2 h after the end;
- `follow_up`: 24 h after the end.

Only those still in the future (by the database clock, passed in) are planned.
"""

from __future__ import annotations

import datetime as dt

OFFSETS: tuple[tuple[str, str, dt.timedelta], ...] = (
    ("upcoming", "start", dt.timedelta(hours=-24)),
    ("check_in", "start", dt.timedelta(0)),
    ("review_request", "end", dt.timedelta(hours=2)),
    ("follow_up", "end", dt.timedelta(hours=24)),
)


def plan(starts_at: dt.datetime, ends_at: dt.datetime, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    out: list[tuple[str, dt.datetime]] = []
    for kind, anchor, offset in OFFSETS:
        when = (starts_at if anchor == "start" else ends_at) + offset
        if when > now:
            out.append((kind, when))
    return out
