"""The booking lifecycle, one module per use case (`booking.reservation.confirm`, which creates a booking, is
in handlers/reservations_confirm.py):

- find.py: `booking.booking.get` (one booking) and `booking.booking.find` (always a page)
- update.py: `booking.booking.update` (staff move a booking along: in-progress, completed, no-show)
- cancel.py: `booking.booking.cancel` (owner or staff, refund policy) and `booking.booking.reject` (staff, full
  refund of a booking awaiting approval)
- approve.py: `booking.booking.approve`
- reschedule.py: `booking.booking.reschedule` (owner or staff: another slot of the clinic, same price)
- rows.py (row -> reply model; `publish`: an event about a booking; `notify_owner`: a notice to its user),
  access.py (who may see or change a booking; `changing`: how every change of a booking opens).

Services that `requires_approval`:
  * confirm creates the booking in `pending_approval`. The reservation becomes `confirmed` (the hold can no
    longer expire) and the unit stays taken by the booking. Payment and financial entry are written as for
    any booking; no reminders yet, no `booking.confirmed` yet; the user gets a "waiting for approval" notice.
  * `booking.booking.approve` (staff of the clinic / admin, before the slot starts): → `confirmed`,
    reminders planned, `booking.confirmed` emitted, user notified.
  * `booking.booking.reject` (staff / admin, reason required): → `cancelled` with a FULL refund of whatever
    was paid (whatever the time), unit given back, reminders cancelled, entry reversed, `booking.cancelled`.
  * the owner may withdraw with `booking.booking.cancel` (normal refund policy).

Status changes go through `domain.booking_states` only; every change appends a booking log entry
(handlers/effects.py). The bookings table trigger writes `booking.created` / `booking.status_changed`.
"""
