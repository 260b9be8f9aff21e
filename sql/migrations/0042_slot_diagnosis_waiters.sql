-- 0042: slot_diagnosis (0031) counts a slot's lapsed holds as free only as the hold does: through
-- booking_free_stale (0041), so none while someone waits for the slot (those units are the waiters'). The
-- hold (reservations.hold), the diagnosis (slots.diagnose, slots.diagnose_date) and the search (slots.find)
-- share that one rule for "occupied". The service's `price` is added at the end (a reschedule to another
-- service must cost what the booking does); 0031's columns keep their names and types, so CREATE OR REPLACE
-- keeps the view.
CREATE OR REPLACE VIEW slot_diagnosis AS
SELECT s.id, s.service_id, sv.clinic_id, s.staff_id, s.slot_date, s.slot_start_time, s.slot_end_time,
       s.starts_at, s.ends_at, s.status, s.capacity, s.booked_count,
       s.starts_at <= now() AS in_past,
       COALESCE(sv.is_available, FALSE) AS service_available,
       now() AS db_now, sv.min_notice_minutes, sv.max_advance_days,
       (SELECT c.timezone FROM clinics c WHERE c.id = sv.clinic_id) AS timezone,
       ex.reason AS exception_reason,
       ex.hit AS on_exception,
       booking_free_stale((SELECT count(*)::int FROM reservations r
                           WHERE r.slot_id = s.id AND r.status = 'pending' AND r.expires_at <= now()),
                          s.id, s.service_id, s.slot_date) AS stale,
       sv.price
FROM slots s
JOIN services sv ON sv.id = s.service_id
CROSS JOIN LATERAL (
    SELECT count(*) > 0 AS hit, min(e->>'reason') AS reason
    FROM booking_exceptions_on(sv.availability_exceptions, s.slot_date) e
) ex;
