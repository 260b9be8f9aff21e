-- Views the named statements share, so a select list and its joins are written once (both plain views:
-- the planner inlines them, and each statement's WHERE still uses the tables' indexes).

-- slot_diagnosis: what decides whether a slot can take a hold now (slots.diagnose for one slot,
-- slots.diagnose_date for a service's day), instead of two copies of the same select list.
-- `stale` counts pending holds past their TTL that still occupy a unit until someone gives them back; the
-- booking window (db_now, min_notice_minutes, max_advance_days, the clinic's timezone) is judged by
-- domain.windows.
CREATE VIEW slot_diagnosis AS
SELECT s.id, s.service_id, sv.clinic_id, s.staff_id, s.slot_date, s.slot_start_time, s.slot_end_time,
       s.starts_at, s.ends_at, s.status, s.capacity, s.booked_count,
       s.starts_at <= now() AS in_past,
       COALESCE(sv.is_available, FALSE) AS service_available,
       now() AS db_now, sv.min_notice_minutes, sv.max_advance_days,
       (SELECT c.timezone FROM clinics c WHERE c.id = sv.clinic_id) AS timezone,
       ex.reason AS exception_reason,
       ex.hit AS on_exception,
       (SELECT count(*)::int FROM reservations r
        WHERE r.slot_id = s.id AND r.status = 'pending' AND r.expires_at <= now()) AS stale
FROM slots s
JOIN services sv ON sv.id = s.service_id
CROSS JOIN LATERAL (
    SELECT count(*) > 0 AS hit, min(e->>'reason') AS reason
    FROM booking_exceptions_on(sv.availability_exceptions, s.slot_date) e
) ex;

-- booking_rows: a booking as every lookup answers it (its row, its slot's times, its payment as p_*
-- columns), instead of the same select list and joins in each bookings.get*/find* statement.
-- `b.*` is expanded when the view is created: a later migration that adds a bookings column (after this
-- number) must CREATE OR REPLACE this view for the lookups to return it.
CREATE VIEW booking_rows AS
SELECT b.*, s.slot_date, s.slot_start_time, s.slot_end_time, s.starts_at, s.ends_at,
       p.id AS p_id, p.external_reference AS p_external_reference, p.amount AS p_amount,
       p.currency AS p_currency, p.payment_method AS p_payment_method, p.status AS p_status,
       p.paid_at AS p_paid_at, p.refund_status AS p_refund_status, p.refund_amount AS p_refund_amount,
       p.refunded_at AS p_refunded_at
FROM bookings b
JOIN slots s ON s.id = b.slot_id
LEFT JOIN payments p ON p.booking_id = b.id;
