-- Delivery progress per (event, subscriber).
-- Why: each subscriber is served by its own loop, so a slow or dead subscriber delays only its own
-- deliveries; a retry resends only to the subscriber that failed; an outbox row is `published` once
-- every subscriber matching its event_type has it (or has given up on it: `dead`).
CREATE TABLE outbox_deliveries (
    event_id UUID NOT NULL REFERENCES booking_events_outbox(id) ON DELETE CASCADE,
    subscriber TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    delivered_at TIMESTAMP WITH TIME ZONE,
    dead BOOLEAN NOT NULL DEFAULT FALSE,
    last_error TEXT,
    PRIMARY KEY (subscriber, event_id)
);

-- The relay scans only the undelivered backlog.
CREATE INDEX idx_booking_events_outbox_backlog ON booking_events_outbox (seq) WHERE NOT published;
CREATE INDEX idx_outbox_deliveries_dead ON outbox_deliveries (subscriber) WHERE dead;
