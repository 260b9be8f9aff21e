-- Slots: capacity counter, generation, block/unblock, search.
-- Capacity rule: booked_count counts pending holds + active bookings; status is 'booked' exactly when an
-- unblocked slot is full. Every statement that changes booked_count keeps that rule in the same UPDATE.

-- name: slots.release_unit
-- Give back $2 units of slot $1 (a cancelled hold or booking). A full slot becomes 'available' again; a
-- blocked one stays blocked. The CHECK (booked_count >= 0) refuses a double release instead of drifting.
UPDATE slots
SET booked_count = booked_count - $2::int,
    status = CASE WHEN status = 'booked' THEN 'available' ELSE status END,
    updated_at = now()
WHERE id = $1
RETURNING id, booked_count, capacity, status;

-- name: slots.diagnose
-- Everything that decides whether slot $1 can take a hold now (the view slot_diagnosis, migrations 0031, 0042),
-- and whether user $2 (NULL: anyone) already holds it.
SELECT d.*,
       ($2::uuid IS NOT NULL AND EXISTS (
           SELECT 1 FROM reservations r
           WHERE r.slot_id = d.id AND r.user_id = $2 AND r.status = 'pending' AND r.expires_at > now()
       )) AS held_by_user
FROM slot_diagnosis d
WHERE d.id = $1;

-- name: slots.diagnose_date
-- slots.diagnose for every slot of service $1 on date $2 (availability check by date).
SELECT d.*, FALSE AS held_by_user
FROM slot_diagnosis d
WHERE d.service_id = $1 AND d.slot_date = $2
ORDER BY d.slot_date, d.slot_start_time, d.id;

-- name: slots.find
-- One keyset page of service $1's slots from $2 to $3 (dates, inclusive), optional staff $4, only bookable
-- ones when $5 (not blocked, full, past or outside the service's booking window); after the cursor ($6
-- date, $7 time, $8 id; the first page passes ($2, 00:00, nil uuid)), at most $9 rows. Expired-but-
-- unreleased holds don't count against `remaining` (unless someone waits: booking_free_stale). The page
-- leaves as one JSON array text (the reply's `items`, built here so the service never touches each row) plus
-- the sort key of its last row when there is a next page, its date and time as text (ISO whatever the
-- DateStyle, as item_head writes them): the cursor's values as they are, with no date and time objects made
-- and formatted again. Instants are booking_iso_instant's (migrations
-- 0011, 0017), as the models write them: UTC, microseconds when there are some ("2030-01-01T09:30:00Z",
-- "...09:30:00.120000Z").
-- Each item is concatenated text: json_agg(json_build_object(...))'s values and key order, in the compact
-- form JSON.stringify writes (no spaces, items joined by ","; migration 0049), at a fraction of the cost:
-- json_build_object looks up every value's type and output function on every row, and the slot's fixed
-- fields are stored already rendered (item_head, migrations 0045, 0049). Nothing else needs escaping: a
-- status of three known words (the slots CHECK) and numbers.
-- Only a slot with units taken (booked_count > 0: its pending holds are among them) can have lapsed holds,
-- so only those look for them. The page is cast to bpchar (free: binary coercible), which the service's
-- connections read as bytes (db/pool.py RAW_TEXT_TYPE), handed on into the reply as they came; other
-- clients read it as text.
WITH sv AS (
    SELECT v.min_notice_minutes, v.max_advance_days,
           (SELECT c.timezone FROM clinics c WHERE c.id = v.clinic_id) AS tz
    FROM services v
    WHERE v.id = $1
), page AS (
    SELECT s.id, s.slot_date, s.slot_start_time, s.item_head,
           CASE WHEN s.status = 'booked' AND st.n > 0 THEN 'available' ELSE s.status END AS status,
           s.capacity,
           s.booked_count - st.n AS booked_count,
           s.capacity - s.booked_count + st.n AS remaining
    FROM sv, slots s
    CROSS JOIN LATERAL (
        SELECT booking_free_stale(count(*)::int, s.id, s.service_id, s.slot_date) AS n FROM reservations r
        WHERE s.booked_count > 0 AND r.slot_id = s.id AND r.status = 'pending' AND r.expires_at <= now()
    ) st
    WHERE s.service_id = $1
      AND s.slot_date <= $3
      AND (s.slot_date, s.slot_start_time, s.id) > ($6::date, $7::time, $8::uuid)
      AND s.slot_date >= $2
      AND ($4::uuid IS NULL OR s.staff_id = $4)
      AND (NOT $5::bool OR (booking_unit_free(s.status, s.booked_count, s.capacity, st.n) AND s.starts_at > now()
                            AND booking_window_refusal(s.starts_at, s.slot_date, now(), sv.tz,
                                                       sv.min_notice_minutes, sv.max_advance_days) IS NULL))
    ORDER BY s.slot_date, s.slot_start_time, s.id
    LIMIT $9::int + 1
), numbered AS (
    SELECT p.*, row_number() OVER (ORDER BY p.slot_date, p.slot_start_time, p.id) AS rn FROM page p
)
SELECT ('[' || COALESCE(string_agg(
           item_head || ',"status":"' || status::text || '","capacity":' || capacity::text
           || ',"booked_count":' || booked_count::text || ',"remaining":' || remaining::text || '}',
           ',' ORDER BY rn) FILTER (WHERE rn <= $9::int), '') || ']')::bpchar AS items,
       count(*) > $9::int AS has_more,
       to_json(max(slot_date) FILTER (WHERE rn = $9::int)) #>> '{}' AS last_date,
       (max(slot_start_time) FILTER (WHERE rn = $9::int))::text AS last_time,
       (array_agg(id) FILTER (WHERE rn = $9::int))[1] AS last_id
FROM numbered;

-- name: slots.insert_many
-- Generated slots of service $1 (staff $2, capacity $3); arrays $4..$8 are slot_date, start, end, starts_at,
-- ends_at. Existing (service, staff, date, start) rows are kept as they are: generating twice is a no-op.
INSERT INTO slots (service_id, staff_id, capacity, slot_date, slot_start_time, slot_end_time, starts_at, ends_at)
SELECT $1, $2, $3, g.d, g.st, g.et, g.sa, g.ea
FROM unnest($4::date[], $5::time[], $6::time[], $7::timestamptz[], $8::timestamptz[]) AS g(d, st, et, sa, ea)
ON CONFLICT ON CONSTRAINT uq_slots_service_staff_start DO NOTHING
RETURNING id;

-- name: slots.get
-- One slot with its service's clinic (for authorisation).
SELECT s.id, s.service_id, sv.clinic_id, s.staff_id, s.slot_date, s.slot_start_time, s.slot_end_time,
       s.starts_at, s.ends_at, s.status, s.capacity, s.booked_count
FROM slots s
JOIN services sv ON sv.id = s.service_id
WHERE s.id = $1;

-- name: slots.block
-- Staff block: no new holds; holds and bookings already on the slot keep their units.
UPDATE slots
SET status = 'blocked', updated_at = now()
WHERE id = $1
RETURNING id, service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,
          status, capacity, booked_count;

-- name: slots.unblock
-- Back to 'booked' when the units already taken fill it, else 'available'. A slot that isn't blocked is
-- left as it is.
UPDATE slots
SET status = CASE WHEN status <> 'blocked' THEN status
                  WHEN booked_count >= capacity THEN 'booked' ELSE 'available' END,
    updated_at = now()
WHERE id = $1
RETURNING id, service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,
          status, capacity, booked_count;

-- name: slots.take_unit
-- One unit of slot $1, of a service of clinic $2, for a booking moving onto it (booking.booking.reschedule):
-- reservations.hold's take without a reservation. The slot's lapsed holds are locked first and count as
-- free (unless someone waits: booking_free_stale); one conditional UPDATE takes a unit only where a hold
-- could (booking_unit_free, booking_open_for_holds), so it never pushes booked_count past capacity; the
-- lapsed holds it frees become 'expired' with their reservation.expired events. No hold quota applies: a
-- booking that moves is no pending hold (migration 0018 counts those). Returns the slot, or no row and no
-- change (slots.diagnose tells why).
WITH stale AS (
    SELECT id
    FROM reservations
    WHERE slot_id = $1 AND status = 'pending' AND expires_at <= now()
    FOR UPDATE
), freed AS (
    SELECT booking_free_stale(count(*)::int, $1, (SELECT sl.service_id FROM slots sl WHERE sl.id = $1),
                              (SELECT sl.slot_date FROM slots sl WHERE sl.id = $1)) AS n
    FROM stale
), taken AS (
    UPDATE slots s
    SET booked_count = s.booked_count - f.n + 1,
        status = CASE WHEN s.booked_count - f.n + 1 >= s.capacity THEN 'booked' ELSE 'available' END,
        updated_at = now()
    FROM services sv, freed f
    WHERE s.id = $1
      AND sv.id = s.service_id
      AND sv.clinic_id = $2
      AND booking_unit_free(s.status, s.booked_count, s.capacity, f.n)
      AND booking_open_for_holds(sv, s.starts_at, s.slot_date)
    RETURNING s.id, s.service_id, s.slot_date, s.slot_start_time, s.starts_at, s.ends_at
), expired AS (
    UPDATE reservations r
    SET status = 'expired', updated_at = now()
    FROM stale st, freed f
    WHERE r.id = st.id AND f.n > 0 AND EXISTS (SELECT 1 FROM taken)
    RETURNING r.id, r.user_id, r.pet_id, r.service_id, r.slot_id, r.expires_at
), events AS MATERIALIZED (
    SELECT gen_random_uuid() AS event_id, e.id, e.user_id, e.pet_id, e.service_id, e.slot_id, e.expires_at
    FROM expired e
), announced AS (
    INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
    SELECT event_id, 'reservation', id, 'reservation.expired',
           booking_event_envelope(booking_reservation_expired(id, user_id, pet_id, service_id, slot_id, expires_at),
                                  'reservation.expired', event_id)
    FROM events
)
SELECT id, service_id, slot_date, slot_start_time, starts_at, ends_at FROM taken;
