-- A subscriber's undelivered delivery records (failed attempts: backing off or dead), indexed apart. Why: the
-- claim skips the aggregates whose head is held back, which it finds from these records; the primary key
-- (subscriber, event_id) would read the subscriber's delivered records too (those of rows another subscriber
-- still awaits, and every record from before 590436b), so each claim would cost the delivery history.
CREATE INDEX idx_outbox_deliveries_pending ON outbox_deliveries (subscriber) WHERE delivered_at IS NULL;
