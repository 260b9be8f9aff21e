-- 0043: a booking can be moved to another slot (booking.booking.reschedule); how many times it was moved
-- is counted so the policy can cap it (BOOKING_RPC_MAX_RESCHEDULES; cal.com #10776).
ALTER TABLE bookings
    ADD COLUMN reschedule_count INTEGER NOT NULL DEFAULT 0 CONSTRAINT valid_reschedule_count CHECK (reschedule_count >= 0);

-- booking_rows (0031) expanded `b.*` when it was created, so it must be made again for the lookups to
-- return the new column. The column lands in the middle of the view's list, which CREATE OR REPLACE
-- refuses: drop and create it (no view or function depends on it; the statements name it as text).
DROP VIEW booking_rows;
CREATE VIEW booking_rows AS
SELECT b.*, s.slot_date, s.slot_start_time, s.slot_end_time, s.starts_at, s.ends_at,
       p.id AS p_id, p.external_reference AS p_external_reference, p.amount AS p_amount,
       p.currency AS p_currency, p.payment_method AS p_payment_method, p.status AS p_status,
       p.paid_at AS p_paid_at, p.refund_status AS p_refund_status, p.refund_amount AS p_refund_amount,
       p.refunded_at AS p_refunded_at
FROM bookings b
JOIN slots s ON s.id = b.slot_id
LEFT JOIN payments p ON p.booking_id = b.id;

-- A rescheduled booking gets reminders for its new slot while the old ones stay, cancelled, as its record:
-- one *pending* reminder per booking and type, instead of one per booking and type ever.
ALTER TABLE booking_reminders DROP CONSTRAINT uq_booking_reminders_booking_type;
CREATE UNIQUE INDEX uq_booking_reminders_pending_type ON booking_reminders(booking_id, reminder_type)
    WHERE status = 'pending';
