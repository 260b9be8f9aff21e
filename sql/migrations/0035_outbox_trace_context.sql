-- The trace context (a JSON map of W3C traceparent/tracestate) of the transaction that wrote each event,
-- which the relay sends on as the NestJS 12 packet `metadata`. A column default, so the events written by
-- handlers, by the bookings trigger and by the hold statements all carry it without naming it: with
-- tracing on the service sets the session's booking.trace_context before a writing statement (named
-- statement tracing.bind_context); off, the setting is unset and the column is NULL ('' also means none).
ALTER TABLE booking_events_outbox
    ADD COLUMN trace_context jsonb DEFAULT nullif(current_setting('booking.trace_context', true), '')::jsonb;
