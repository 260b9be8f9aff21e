-- 0025: a refund's lifecycle is pending -> processing -> completed | failed, driven by the payment
-- service's payment.status_changed events; refunded_at is when the money actually went back, so it is set
-- only on completion. Until now cancel stamped it on request: rows whose refund has not completed lose it.
UPDATE payments SET refunded_at = NULL WHERE refunded_at IS NOT NULL AND refund_status IS DISTINCT FROM 'completed';
ALTER TABLE payments ADD CONSTRAINT valid_refunded_at CHECK (refunded_at IS NULL OR refund_status = 'completed');
-- staff look for a clinic's refunds by status (failed ones need a person); payments have no clinic_id, their
-- bookings do, so the lookup goes through the booking: index the refund status with the booking.
CREATE INDEX idx_payments_refund_status_booking ON payments(refund_status, booking_id) WHERE refund_status IS NOT NULL;
