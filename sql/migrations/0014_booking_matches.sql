-- Which bookings a search asks for (booking.booking.find: bookings.find_by_slot_time, find_by_created and
-- count), written once. A plain SQL function of columns and parameters, which the planner inlines: each
-- statement gets the very expressions it had, so its plan and the indexes it uses do not change.
-- want_* NULL means any; upcoming: starts in the future and still pending approval or confirmed.
CREATE FUNCTION booking_matches(
    user_id uuid, clinic_id uuid, status text, slot_date date, starts_at timestamptz,
    want_user uuid, want_clinic uuid, want_statuses text[], date_from date, date_to date, upcoming boolean
) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (want_user IS NULL OR user_id = want_user)
       AND (want_clinic IS NULL OR clinic_id = want_clinic)
       AND (want_statuses IS NULL OR status = ANY(want_statuses))
       AND (date_from IS NULL OR slot_date >= date_from)
       AND (date_to IS NULL OR slot_date <= date_to)
       AND (NOT upcoming OR (starts_at > now() AND status IN ('pending_approval', 'confirmed')))
$$;
