-- name: tracing.bind_context
-- With tracing on, run before a writing statement when the trace changed: the current trace context ($1, a
-- JSON map of traceparent/tracestate, or '' for none) for this session; the outbox's trace_context column
-- defaults to it, so every event written (by handlers, the bookings trigger, the hold statements) carries it.
SELECT set_config('booking.trace_context', $1, false);
