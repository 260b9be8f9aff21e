-- Bookings: confirm (hold -> booking), lookups and keyset search, status changes, cancel, approval.
-- A booking row leaves with its slot's times and its payment (p_* columns): the view booking_rows (migration 0031).

-- name: bookings.lock_reservation
-- Reservation $1 locked FOR UPDATE with everything confirm needs: slot, service, clinic and pet caches, and
-- `live` (pending and unexpired by the database clock) + `db_now`.
SELECT r.id, r.user_id, r.pet_id, r.service_id, r.slot_id, r.lock_id, r.status, r.expires_at,
       (r.status = 'pending' AND r.expires_at > now()) AS live,
       now() AS db_now,
       s.slot_date, s.slot_start_time, s.slot_end_time, s.starts_at, s.ends_at,
       sv.clinic_id, sv.name AS service_name, sv.price, sv.duration_minutes,
       COALESCE(sv.requires_approval, FALSE) AS requires_approval,
       c.name AS clinic_name,
       p.id AS pet_cache_id, p.name AS pet_name, p.species AS pet_species, p.breed AS pet_breed
FROM reservations r
JOIN slots s ON s.id = r.slot_id
JOIN services sv ON sv.id = r.service_id
LEFT JOIN clinics c ON c.id = sv.clinic_id
LEFT JOIN pets p ON p.id = r.pet_id
WHERE r.id = $1
FOR UPDATE OF r;

-- name: bookings.confirm_reservation
-- The hold became a booking: its unit now belongs to the booking (booked_count unchanged).
UPDATE reservations
SET status = 'confirmed', confirmed_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING id, confirmed_at;

-- name: bookings.insert
-- $1 reservation, $2 user, $3 pet, $4 clinic, $5 service, $6 slot, $7 payment id (or NULL), $8 reference
-- code, $9 amount, $10 status, $11 notes, $12 pet_snapshot, $13 service_snapshot, $14 booking_time.
-- The table trigger writes booking.created. Unique violations: the reference code (retry) or the
-- reservation (a concurrent confirm).
INSERT INTO bookings (reservation_id, user_id, pet_id, clinic_id, service_id, slot_id, payment_id,
                      reference_code, amount, status, notes, pet_snapshot, service_snapshot, booking_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING id, created_at;

-- name: bookings.get
-- One booking by id, with its slot's times and its payment.
SELECT b.*
FROM booking_rows b
WHERE b.id = $1;

-- name: bookings.get_by_reference
-- One booking by its reference code.
SELECT b.*
FROM booking_rows b
WHERE b.reference_code = $1;

-- name: bookings.get_by_reservation
-- The booking a reservation became, if any.
SELECT id FROM bookings WHERE reservation_id = $1;

-- name: bookings.find_by_slot_time
-- A keyset page, earliest slot first. $1 user, $2 clinic, $3 statuses, $4/$5 slot date range (inclusive),
-- $6 upcoming only (starts in the future and still pending approval or confirmed), $7/$8 cursor
-- (slot start, id) or NULLs, $9 rows (the caller asks one more to know whether a next page exists).
SELECT b.*
FROM booking_rows b
WHERE booking_matches(b.user_id, b.clinic_id, b.status, b.slot_date, b.starts_at,
                      $1::uuid, $2::uuid, $3::text[], $4::date, $5::date, $6::bool)
  AND ($7::timestamptz IS NULL OR (b.starts_at, b.id) > ($7::timestamptz, $8::uuid))
ORDER BY b.starts_at, b.id
LIMIT $9::int;

-- name: bookings.find_by_created
-- As bookings.find_by_slot_time, newest booking first; cursor is (created_at, id).
SELECT b.*
FROM booking_rows b
WHERE booking_matches(b.user_id, b.clinic_id, b.status, b.slot_date, b.starts_at,
                      $1::uuid, $2::uuid, $3::text[], $4::date, $5::date, $6::bool)
  AND ($7::timestamptz IS NULL OR (b.created_at, b.id) < ($7::timestamptz, $8::uuid))
ORDER BY b.created_at DESC, b.id DESC
LIMIT $9::int;

-- name: bookings.count
-- How many bookings match the criteria of bookings.find_* ($1..$6, booking_matches of migration 0014),
-- ignoring the cursor.
SELECT count(*)::int
FROM bookings b
JOIN slots s ON s.id = b.slot_id
WHERE booking_matches(b.user_id, b.clinic_id, b.status, s.slot_date, s.starts_at,
                      $1::uuid, $2::uuid, $3::text[], $4::date, $5::date, $6::bool);

-- name: bookings.lock_row
-- Booking $1's row locked FOR UPDATE, read alone. bookings.lock joins the slot: had it waited for the lock
-- itself, PostgreSQL would re-check the join of a booking moved meanwhile (a reschedule) against the slot
-- row it read before the wait and find no row. Taken first, the lock makes bookings.lock read the booking
-- as it is now.
SELECT id FROM bookings WHERE id = $1 FOR UPDATE;

-- name: bookings.lock
-- Booking $1 locked FOR UPDATE for a change, with its slot's instants, its service's name, price and
-- cancel cut-off, how often it was rescheduled, and the database clock.
SELECT b.id, b.reference_code, b.user_id, b.pet_id, b.clinic_id, b.service_id, b.slot_id, b.amount,
       b.status, b.cancellation_reason, b.service_snapshot, b.reschedule_count, b.booking_time,
       s.starts_at, s.ends_at, s.slot_date, s.slot_start_time, s.slot_end_time,
       sv.name AS service_name, sv.price, sv.cancel_cutoff_hours,
       now() AS db_now
FROM bookings b
JOIN slots s ON s.id = b.slot_id
JOIN services sv ON sv.id = b.service_id
WHERE b.id = $1
FOR UPDATE OF b;

-- name: bookings.set_status
-- Booking $1 -> status $2 (the trigger writes booking.status_changed); $3 the cancellation reason, kept
-- when NULL.
UPDATE bookings
SET status = $2, cancellation_reason = COALESCE($3, cancellation_reason), updated_at = now()
WHERE id = $1
RETURNING id, status, updated_at;

-- name: bookings.insert_financial_entry
-- $1 booking, $2 clinic, $3 type, $4 total, $5 platform fee, $6 clinic amount, $7 tax, $8 currency,
-- $9 status, $10 transaction reference. One entry per booking and type: a retry writes nothing.
INSERT INTO financial_entries (booking_id, clinic_id, type, total_amount, platform_fee, clinic_amount,
                               tax_amount, currency, status, transaction_reference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT ON CONSTRAINT uq_financial_entries_booking_type DO NOTHING
RETURNING id;

-- name: bookings.entry_ready_for_settlement
-- Completing a booking makes its revenue settleable.
UPDATE financial_entries
SET status = 'ready_for_settlement', updated_at = now()
WHERE booking_id = $1 AND type = 'booking_payment' AND status = 'pending'
RETURNING id;

-- name: bookings.reverse_entry
-- A cancelled booking earns nothing: its payment entry is reversed (a settled one stays for accounting).
UPDATE financial_entries
SET status = 'reversed', updated_at = now()
WHERE booking_id = $1 AND type = 'booking_payment' AND status IN ('pending', 'ready_for_settlement')
RETURNING id;

-- name: bookings.insert_reminders
-- Reminders of booking $1: types $2 at instants $3 (parallel arrays). Planned twice = written once (one
-- pending reminder per booking and type: migration 0043).
INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time)
SELECT $1, t.kind, t.at
FROM unnest($2::text[], $3::timestamptz[]) AS t(kind, at)
ON CONFLICT (booking_id, reminder_type) WHERE status = 'pending' DO NOTHING;

-- name: bookings.cancel_reminders
-- Cancel booking $1's pending reminders of types $2 (NULL: all).
UPDATE booking_reminders
SET status = 'cancelled', updated_at = now()
WHERE booking_id = $1 AND status = 'pending' AND ($2::text[] IS NULL OR reminder_type = ANY($2))
RETURNING id;

-- name: bookings.insert_log
-- The booking's log (one per booking).
INSERT INTO booking_logs (booking_id) VALUES ($1) RETURNING id;

-- name: bookings.append_log
-- One entry in booking $1's log: $2 action, $3 status, $4 previous_state, $5 new_state, $6 performed_by,
-- $7 notes. A booking without a log (made outside confirm) gets one first.
WITH existing AS (
    SELECT id FROM booking_logs WHERE booking_id = $1 ORDER BY created_at, id LIMIT 1
), created AS (
    INSERT INTO booking_logs (booking_id)
    SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM existing)
    RETURNING id
)
INSERT INTO booking_log_entries (log_id, action, status, previous_state, new_state, performed_by, notes)
SELECT id, $2, $3, $4, $5, $6, $7 FROM (SELECT id FROM existing UNION ALL SELECT id FROM created) l
RETURNING id;

-- name: bookings.move
-- Booking $1 moves to slot $2 of service $3 (booking.booking.reschedule): booking_time is the slot's start,
-- the service snapshot takes that service's current name, price and duration, reschedule_count + 1. The
-- status does not change, so the booking trigger writes no event.
UPDATE bookings b
SET slot_id = s.id,
    service_id = sv.id,
    booking_time = s.starts_at,
    service_snapshot = COALESCE(b.service_snapshot, '{}'::jsonb)
        || jsonb_build_object('id', sv.id, 'name', sv.name, 'price', sv.price::text,
                              'duration_minutes', sv.duration_minutes),
    reschedule_count = b.reschedule_count + 1,
    updated_at = now()
FROM slots s
JOIN services sv ON sv.id = s.service_id
WHERE b.id = $1 AND s.id = $2 AND sv.id = $3
RETURNING b.id, b.booking_time, b.reschedule_count, b.updated_at;
