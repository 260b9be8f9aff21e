-- Instants in event payloads written by SQL look exactly like those written by the service's pydantic models
-- ("2030-01-01T09:30:00Z", "2030-01-01T09:30:00.120000Z": UTC, microseconds only when there are some), so a
-- consumer sees one format whichever path wrote the event. to_jsonb(timestamptz) would follow the session's
-- TimeZone and trim trailing zeros.
CREATE FUNCTION booking_iso_instant(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', ts)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(ts AT TIME ZONE 'UTC', '.US') END
        || 'Z'
$$;
