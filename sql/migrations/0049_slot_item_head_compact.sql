-- slots.item_head (0045, 0046) in JSON.stringify's form: no space around ':' or after ',' ({"id":"...",...}).
-- Why: slots.find's page leaves the service as PostgreSQL wrote it, and json_build_object's `"key" : value`
-- spacing made it 10% more bytes than the same JSON as NestJS (JSON.stringify) writes it, bytes that
-- PostgreSQL sends, the service reads and the caller reads again on every find (a 100-slot page of the bench
-- seed: 39,800 -> 36,201 bytes), and the reply differed from the NestJS peer's for the same page. The values'
-- text is unchanged (the date as to_json writes it, whatever the DateStyle; instants booking_iso_instant's).
-- The column is dropped and added again, so every row is rendered anew (a stored generated column keeps the
-- text of the function it was written with; ALTER COLUMN ... SET EXPRESSION is PostgreSQL 17's); no view
-- reads it. The function keeps the search_path it is created under (0046's why).
ALTER TABLE slots DROP COLUMN item_head;

CREATE OR REPLACE FUNCTION booking_slot_item_head(
    id uuid, service_id uuid, staff_id uuid, slot_date date, slot_start_time time, slot_end_time time,
    starts_at timestamptz, ends_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    SELECT '{"id":"' || id::text || '","service_id":"' || service_id::text
        || '","staff_id":' || COALESCE('"' || staff_id::text || '"', 'null')
        || ',"slot_date":' || to_json(slot_date)::text
        || ',"slot_start_time":"' || slot_start_time::text || '","slot_end_time":"' || slot_end_time::text
        || '","starts_at":"' || booking_iso_instant(starts_at) || '","ends_at":"' || booking_iso_instant(ends_at)
        || '"'
$$;

ALTER TABLE slots ADD COLUMN item_head TEXT NOT NULL GENERATED ALWAYS AS (
    booking_slot_item_head(id, service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at)
) STORED;
