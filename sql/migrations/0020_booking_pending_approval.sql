-- 0020: bookings of services that require approval wait in 'pending_approval' (holding their slot unit)
-- until clinic staff approve (-> confirmed) or reject (-> cancelled, full refund, unit given back).
ALTER TABLE bookings DROP CONSTRAINT IF EXISTS bookings_status_check;
ALTER TABLE bookings ADD CONSTRAINT bookings_status_check
    CHECK (status IN ('pending_approval', 'confirmed', 'in-progress', 'completed', 'cancelled', 'no-show'));

-- a booking's notification inbox and the payment lookup by the provider's reference
CREATE INDEX IF NOT EXISTS idx_notifications_booking ON notifications(booking_id);
CREATE INDEX IF NOT EXISTS idx_bookings_created_keyset ON bookings(created_at DESC, id DESC);
