-- booking_slot_item_head (0045) with its search_path fixed at the one it was created under. Why: its body
-- calls booking_iso_instant unqualified, and pg_dump's output (so a restore, and pg_upgrade's schema copy) runs
-- with search_path = '': CREATE TABLE slots failed there ("function booking_iso_instant(timestamp with time
-- zone) does not exist", the planner reads the body of the generated column's function), and with it the
-- slots data and every view on slots. A function with its own setting is never inlined, as this one (IMMUTABLE
-- over a STABLE call) already was not; the setting costs only slot writes that compute item_head.
ALTER FUNCTION booking_slot_item_head(uuid, uuid, uuid, date, time, time, timestamptz, timestamptz)
    SET search_path FROM CURRENT;
