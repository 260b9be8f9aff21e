"""When a booking's owner may still change it: the cancel cut-off (per service) and the reschedule policy.

- Cancel: an owner may not cancel closer than the service's `cancel_cutoff_hours` to the start (cal.com
  #15647); staff of the clinic (and admins) still may, and the refund policy decides the money either way.
- Reschedule: not closer than `reschedule_cutoff_hours` to the *current* slot's start (staff may override),
  and at most `max_reschedules` times per booking, for everyone (cal.com #10776).

`now` is the database clock's; the answer is the refusal's reason for RESCHEDULE_NOT_ALLOWED /
CANCEL_NOT_ALLOWED, or None.
"""

from __future__ import annotations

import datetime as dt


def _hours(value: float) -> str:
    return f"{value:g} hour" + ("" if value == 1 else "s")


def cancel_refusal(starts_at: dt.datetime, now: dt.datetime, *, cutoff_hours: float, by_staff: bool) -> str | None:
    if by_staff or cutoff_hours <= 0 or starts_at - now >= dt.timedelta(hours=cutoff_hours):
        return None
    return f"bookings of this service cannot be cancelled less than {_hours(cutoff_hours)} before the start"


def reschedule_refusal(
    starts_at: dt.datetime,
    now: dt.datetime,
    *,
    cutoff_hours: float,
    reschedules: int,
    max_reschedules: int,
    by_staff: bool,
) -> str | None:
    if reschedules >= max_reschedules:
        return f"this booking was already rescheduled {reschedules} times (at most {max_reschedules})"
    if by_staff or starts_at - now >= dt.timedelta(hours=cutoff_hours):
        return None
    return f"a booking cannot be rescheduled less than {_hours(cutoff_hours)} before it starts"
