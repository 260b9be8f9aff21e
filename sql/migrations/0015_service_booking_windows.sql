-- 0015: booking windows per service (cal.com's minimum notice and horizon, and the cancel cut-off of its
-- #15647), kept on the service so each clinic sets its own:
--   min_notice_minutes  a hold must start at least this many real minutes after the database clock's now;
--   max_advance_days    the horizon: a slot's clinic-local date may be at most this many days after the
--                       clinic's local today (NULL: no horizon);
--   cancel_cutoff_hours owners may not cancel closer than this to the start (staff still may).
-- Notice is counted in real minutes between instants and the horizon in the clinic's calendar days, so a
-- daylight-saving change in between moves neither (cal.com #12137).
ALTER TABLE services
    ADD COLUMN min_notice_minutes INTEGER NOT NULL DEFAULT 0 CONSTRAINT valid_min_notice CHECK (min_notice_minutes >= 0),
    ADD COLUMN max_advance_days INTEGER NULL CONSTRAINT valid_max_advance CHECK (max_advance_days >= 0),
    ADD COLUMN cancel_cutoff_hours INTEGER NOT NULL DEFAULT 0 CONSTRAINT valid_cancel_cutoff CHECK (cancel_cutoff_hours >= 0);

-- Why a slot is outside its service's booking window at instant `at` ('TOO_SOON', 'TOO_FAR_AHEAD'), or
-- NULL when it is inside. `tz` is the clinic's zone (read only when there is a horizon). The rule is
-- booking_rpc.domain.windows.refusal; a test holds the two to the same answers across DST days.
CREATE FUNCTION booking_window_refusal(
    starts_at timestamptz, slot_date date, at timestamptz, tz text, min_notice_minutes int, max_advance_days int
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN starts_at < at + make_interval(mins => min_notice_minutes) THEN 'TOO_SOON'
        WHEN max_advance_days IS NOT NULL
             AND slot_date > (at AT TIME ZONE COALESCE(tz, 'UTC'))::date + max_advance_days THEN 'TOO_FAR_AHEAD'
    END
$$;
