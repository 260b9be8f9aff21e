-- 0012: which of a service's availability exceptions (services.availability_exceptions, JSON kept from the
-- Clinic Service) cover a day: objects with "date", or "start_date" [.. "end_date"]; anything else in the
-- value is ignored. One definition for reservations.hold, slots.diagnose and slots.diagnose_date, which
-- each spelled it out before; a plain SQL function, so the planner inlines it into each of them.
CREATE OR REPLACE FUNCTION booking_exceptions_on(exceptions jsonb, day date) RETURNS SETOF jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT e
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(exceptions) = 'array' THEN exceptions ELSE '[]'::jsonb END) e
    WHERE jsonb_typeof(e) = 'object'
      AND day BETWEEN COALESCE(e->>'date', e->>'start_date')::date
                  AND COALESCE(e->>'date', e->>'end_date', e->>'start_date')::date
$$;
