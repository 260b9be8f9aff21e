-- Writers no longer NOTIFY: PostgreSQL serialises every committing transaction that has NOTIFYed on one
-- database-wide lock (the notification queue's), which bench/flows.py measured as the largest wait of
-- hold+confirm (Lock:object) and a quarter of its throughput. The service wakes its own relay in-process
-- after commit, and tells other replicas with one coalesced NOTIFY outside the writers' transactions
-- (booking_rpc/events/relay.py, OutboxSignal); the relay's poll stays the fallback.
DROP TRIGGER IF EXISTS booking_outbox_notify ON booking_events_outbox;
DROP FUNCTION IF EXISTS booking_outbox_notify();
