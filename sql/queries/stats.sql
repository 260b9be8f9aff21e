-- name: stats.completion_rates
-- The latest $1 months of the materialized view (refreshed concurrently by the views job).
SELECT month, total_bookings, completed_bookings, cancelled_bookings, no_show_bookings,
       completion_rate, cancellation_rate
FROM booking_completion_rates
ORDER BY month DESC
LIMIT $1;
