-- outbox_deliveries.event_id without its foreign key to booking_events_outbox.
-- Why: the relay records a batch's deliveries (one row per event and subscriber) only for rows it has just
-- read in the same transaction, so the key never caught anything, while its check (a FOR KEY SHARE lookup of
-- the outbox row per inserted delivery) was about a third of PostgreSQL's CPU per delivered event: draining
-- 30,000 events to JetStream, 119-143 µs of PostgreSQL CPU per event with the key, 81-93 µs without.
-- Nothing deletes outbox rows; a retention job that does must delete their deliveries too (no CASCADE now).
ALTER TABLE outbox_deliveries DROP CONSTRAINT outbox_deliveries_event_id_fkey;
