-- booking_events_outbox.held_back: the row is queued behind a head held back (dead or backing off) for some
-- subscriber; a hint for the claim's scan, never the delivery state (outbox_deliveries is). Why: the claim's
-- window (the oldest undelivered rows, in seq order) skipped the rows of held-back aggregates one by one, so a
-- dead head with thousands of events queued behind it cost every claim of its subscriber a read of each. A claim
-- now marks the rows of the aggregates it holds back (once each), its window scans only unmarked rows
-- (idx_booking_events_outbox_free), and it finds the marked rows of aggregates no longer held back for it by
-- aggregate (idx_booking_events_outbox_held_back: a lookup per such aggregate).
-- The seed's per-row retry indexes go: nothing reads them since the delivery state moved to outbox_deliveries
-- (0030), and each was one more index entry per event written; the two that take their place keep that count.
ALTER TABLE booking_events_outbox ADD COLUMN held_back BOOLEAN NOT NULL DEFAULT FALSE;

DROP INDEX idx_booking_events_outbox_pending_aggregate;
DROP INDEX idx_booking_events_outbox_pending_due;

-- the claim's window, and the unmarked rows of an aggregate it holds back (to mark them)
CREATE INDEX idx_booking_events_outbox_free ON booking_events_outbox (seq) WHERE NOT published AND NOT held_back;
CREATE INDEX idx_booking_events_outbox_free_aggregate
ON booking_events_outbox (aggregate_id, seq) WHERE NOT published AND NOT held_back;
-- the marked rows, by aggregate: only rows queued behind held-back heads have an entry
CREATE INDEX idx_booking_events_outbox_held_back
ON booking_events_outbox (aggregate_id, seq) WHERE NOT published AND held_back;
