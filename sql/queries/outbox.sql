-- name: outbox.enqueue
-- One event row, written in the caller's transaction (the statement trigger NOTIFYs the relay).
INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
VALUES ($1, $2, $3, $4, $5);
