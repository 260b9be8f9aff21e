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
-- Payment $1 -> status $2; success stamps paid_at ($3, the provider's time, else now()). The refund moves
-- separately (payments.set_refund_status).
UPDATE payments
SET status = $2::varchar,
    paid_at = CASE WHEN $2::varchar = 'success' THEN COALESCE($3::timestamptz, now()) ELSE paid_at END,
    updated_at = now()
WHERE id = $1
RETURNING id, booking_id, external_reference, amount, currency, payment_method, status, paid_at,
          refund_status, refund_amount, refunded_at, updated_at;

-- name: payments.record_refund
-- Record refund $2 on payment $1: 'pending' (requested, to be paid out) when > 0, nothing owed when 0.
-- refunded_at stays empty until the payment service reports the refund completed. The CHECK
-- (refund_amount <= amount) refuses a refund above what was paid.
UPDATE payments
SET refund_amount = $2::numeric,
    refund_status = CASE WHEN $2::numeric > 0 THEN 'pending' END,
    refunded_at = NULL,
    updated_at = now()
WHERE id = $1
RETURNING id, refund_status, refund_amount, refunded_at, updated_at;

-- name: payments.set_refund_status
-- Payment $1's refund -> $2, compare-and-swap from one of $3 (domain.refunds.refund_predecessors: forward
-- only); completion stamps refunded_at ($4, the provider's time, else now()). No row: it did not move.
UPDATE payments
SET refund_status = $2::varchar,
    refunded_at = CASE WHEN $2::varchar = 'completed' THEN COALESCE($4::timestamptz, now()) END,
    updated_at = now()
WHERE id = $1 AND refund_status = ANY($3::text[])
RETURNING id, booking_id, external_reference, amount, currency, refund_status, refund_amount, refunded_at,
          updated_at;

-- name: payments.find
-- A keyset page of payments with their bookings, most recently changed first: $1 clinic (NULL: all),
-- $2 refund statuses (NULL: any), $3 payment statuses (NULL: any), after cursor ($4 updated_at, $5 id) or
-- NULLs, $6 rows (the caller asks one more to know whether a next page exists).
SELECT p.id, p.booking_id, p.external_reference, p.amount, p.currency, p.payment_method, p.status, p.paid_at,
       p.refund_status, p.refund_amount, p.refunded_at, p.updated_at,
       b.reference_code, b.user_id, b.clinic_id
FROM payments p
JOIN bookings b ON b.id = p.booking_id
WHERE ($1::uuid IS NULL OR b.clinic_id = $1)
  AND ($2::text[] IS NULL OR p.refund_status = ANY($2))
  AND ($3::text[] IS NULL OR p.status = ANY($3))
  AND ($4::timestamptz IS NULL OR (p.updated_at, p.id) < ($4::timestamptz, $5::uuid))
ORDER BY p.updated_at DESC, p.id DESC
LIMIT $6::int;
