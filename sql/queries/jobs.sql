-- name: jobs.claim_due_reminders
-- Due reminders of bookings still active, claimed so that two workers never send one twice.
SELECT r.id, r.booking_id, r.reminder_type, r.scheduled_time, b.user_id, b.reference_code, b.booking_time,
       b.service_snapshot ->> 'name' AS service_name
FROM booking_reminders r
JOIN bookings b ON b.id = r.booking_id
WHERE r.status = 'pending' AND r.scheduled_time <= now()
ORDER BY r.scheduled_time
LIMIT $1
FOR UPDATE OF r SKIP LOCKED;

-- name: jobs.mark_reminder_sent
UPDATE booking_reminders SET status = 'sent', sent_at = now(), updated_at = now() WHERE id = $1;

-- name: jobs.try_lock
-- One replica at a time runs a given periodic job (held until the transaction ends).
SELECT pg_try_advisory_xact_lock(hashtext('booking_rpc_job:' || $1));

-- name: jobs.refresh_upcoming_bookings
REFRESH MATERIALIZED VIEW CONCURRENTLY upcoming_bookings_view;

-- name: jobs.refresh_completion_rates
REFRESH MATERIALIZED VIEW CONCURRENTLY booking_completion_rates;
