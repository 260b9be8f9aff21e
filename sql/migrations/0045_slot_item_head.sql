-- slots.item_head: the start of the slot's slots.find item, from "{" to its ends_at value (id, service_id,
-- staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at: the fields only a change of the
-- slot itself changes), written once per row change instead of on every search. Why: rendering those eight
-- fields was ~2.1 of the ~2.4 µs of PostgreSQL CPU per item (uuid and time casts, two booking_iso_instant
-- calls, the date), so a 100-slot page cost ~460 µs of PostgreSQL CPU per find, 255-280 µs with the head stored
-- (bench seed, one connection). Writes of status/booked_count (holds, releases, block) do not recompute it:
-- PostgreSQL recomputes a stored generated column only when a column it reads is updated.
-- The text is json_build_object's for the same values (`"key" : value`, the date as to_json writes it, whatever
-- the DateStyle), as slots.find's items were; a test holds the two together. IMMUTABLE (a generated column
-- needs it) is true of what the function calls here: to_json of a date and to_char of a UTC timestamp with no
-- locale-dependent field do not follow any setting. A change of booking_iso_instant's text must rewrite this
-- column (ALTER TABLE slots ALTER COLUMN item_head SET EXPRESSION is PostgreSQL 17's; before it, drop and add).
CREATE FUNCTION booking_slot_item_head(
    id uuid, service_id uuid, staff_id uuid, slot_date date, slot_start_time time, slot_end_time time,
    starts_at timestamptz, ends_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{"id" : "' || id::text || '", "service_id" : "' || service_id::text
        || '", "staff_id" : ' || COALESCE('"' || staff_id::text || '"', 'null')
        || ', "slot_date" : ' || to_json(slot_date)::text
        || ', "slot_start_time" : "' || slot_start_time::text || '", "slot_end_time" : "' || slot_end_time::text
        || '", "starts_at" : "' || booking_iso_instant(starts_at) || '", "ends_at" : "' || booking_iso_instant(ends_at)
        || '"'
$$;

ALTER TABLE slots ADD COLUMN item_head TEXT NOT NULL GENERATED ALWAYS AS (
    booking_slot_item_head(id, service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at)
) STORED;
