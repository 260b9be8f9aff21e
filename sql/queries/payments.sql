-- Payments of bookings (one per booking) and their refunds.

-- name: payments.insert
-- $1 id, $2 booking, $3 external reference, $4 amount, $5 currency, $6 method, $7 status, $8 details.
INSERT INTO payments (id, booking_id, external_reference, amount, currency, payment_method, status,
                      payment_details, paid_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::varchar, $8, CASE WHEN $7::varchar = 'success' THEN now() END)
RETURNING id, booking_id, external_reference, amount, currency, payment_method, status, paid_at,
          refund_status, refund_amount, refunded_at, created_at, updated_at;

-- name: payments.lock_for_booking
-- Booking $1's payment, locked.
SELECT id, booking_id, external_reference, amount, currency, payment_method, status, paid_at,
       refund_status, refund_amount, refunded_at
FROM payments
WHERE booking_id = $1
FOR UPDATE;

-- name: payments.lock_by_reference
-- The payment with external reference $1 (newest if several), locked, with its booking's state.
SELECT p.id, p.booking_id, p.external_reference, p.amount, p.currency, p.payment_method, p.status,
       p.paid_at, p.refund_status, p.refund_amount, p.refunded_at,
       b.status AS booking_status, b.user_id, b.clinic_id, b.reference_code
FROM payments p
JOIN bookings b ON b.id = p.booking_id
WHERE p.external_reference = $1
ORDER BY p.created_at DESC, p.id
LIMIT 1
FOR UPDATE OF p;

-- name: payments.set_status
-- Payment $1 -> status $2; success stamps paid_at ($3, the provider's time, else now()); 'refunded' completes
-- a pending refund.
UPDATE payments
SET status = $2::varchar,
    paid_at = CASE WHEN $2::varchar = 'success' THEN COALESCE($3::timestamptz, now()) ELSE paid_at END,
    refund_status = CASE WHEN $2::varchar = 'refunded' AND refund_status IN ('pending', 'processing')
                         THEN 'completed' ELSE refund_status END,
    updated_at = now()
WHERE id = $1
RETURNING id, booking_id, external_reference, amount, currency, payment_method, status, paid_at,
          refund_status, refund_amount, refunded_at, updated_at;

-- name: payments.record_refund
-- Record refund $2 on payment $1: 'pending' (to be paid out) when > 0, nothing owed when 0. The CHECK
-- (refund_amount <= amount) refuses a refund above what was paid.
UPDATE payments
SET refund_amount = $2::numeric,
    refund_status = CASE WHEN $2::numeric > 0 THEN 'pending' END,
    refunded_at = CASE WHEN $2::numeric > 0 THEN now() END,
    updated_at = now()
WHERE id = $1
RETURNING id, refund_status, refund_amount, refunded_at;
