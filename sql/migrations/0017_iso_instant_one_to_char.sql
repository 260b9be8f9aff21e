-- booking_iso_instant (0011) with one to_char instead of two and a date_part: the same text
-- ("2030-01-01T09:30:00Z", "2030-01-01T09:30:00.120000Z"), at about a third of the cost per value, now that
-- slots.find writes every item's starts_at/ends_at with it (200 calls for a page of 100 slots).
CREATE OR REPLACE FUNCTION booking_iso_instant(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC',
                   CASE WHEN date_trunc('second', ts) = ts THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
                        ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
$$;
