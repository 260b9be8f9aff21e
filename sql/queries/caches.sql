-- name: caches.upsert_user
-- Newer data only: an event older than what we hold changes nothing (returns no row).
INSERT INTO users AS u (id, email, full_name, phone_number, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET email = EXCLUDED.email, full_name = EXCLUDED.full_name, phone_number = EXCLUDED.phone_number,
    updated_at = EXCLUDED.updated_at
WHERE u.updated_at < EXCLUDED.updated_at
RETURNING u.id;

-- name: caches.upsert_pet
-- Newer data only; then the snapshot of the pet's bookings that have not started yet (past bookings keep
-- the snapshot they were made with).
WITH up AS (
    INSERT INTO pets AS p (id, name, species, breed, owner_id, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, species = EXCLUDED.species, breed = EXCLUDED.breed,
        owner_id = coalesce(EXCLUDED.owner_id, p.owner_id), updated_at = EXCLUDED.updated_at
    WHERE p.updated_at < EXCLUDED.updated_at
    RETURNING p.id, p.name, p.species, p.breed
), refreshed AS (
    UPDATE bookings b
    SET pet_snapshot = jsonb_build_object('id', up.id, 'name', up.name, 'species', up.species, 'breed', up.breed),
        updated_at = now()
    FROM up
    WHERE b.pet_id = up.id AND b.booking_time > now()
    RETURNING b.id
)
SELECT (SELECT count(*) FROM up) AS applied, (SELECT count(*) FROM refreshed) AS bookings_refreshed;

-- name: caches.upsert_clinic
-- Newer data only; the clinic name inside future bookings' service snapshots follows.
WITH up AS (
    INSERT INTO clinics AS c (id, name, address, phone_number, timezone, updated_at)
    VALUES ($1, $2, $3, $4, coalesce($5, 'UTC'), $6)
    ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, address = EXCLUDED.address, phone_number = EXCLUDED.phone_number,
        timezone = coalesce($5, c.timezone), updated_at = EXCLUDED.updated_at
    WHERE c.updated_at < EXCLUDED.updated_at
    RETURNING c.id, c.name
), refreshed AS (
    UPDATE bookings b
    SET service_snapshot = b.service_snapshot || jsonb_build_object('clinic_name', up.name), updated_at = now()
    FROM up
    WHERE b.clinic_id = up.id AND b.booking_time > now()
    RETURNING b.id
)
SELECT (SELECT count(*) FROM up) AS applied, (SELECT count(*) FROM refreshed) AS bookings_refreshed;

-- name: caches.upsert_service
-- The Clinic Service owns the catalogue: newer data only; future bookings' service snapshots follow
-- (their price stays: the amount was agreed when booking). The booking window ($8 min notice, $9 horizon,
-- $10 cancel cut-off) changes only when the event carries it (NULL keeps the current value).
WITH up AS (
    INSERT INTO services AS sv (id, clinic_id, name, price, duration_minutes, is_available, updated_at,
                                min_notice_minutes, max_advance_days, cancel_cutoff_hours)
    VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8::int, 0), $9::int, COALESCE($10::int, 0))
    ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, price = EXCLUDED.price, duration_minutes = EXCLUDED.duration_minutes,
        is_available = EXCLUDED.is_available, updated_at = EXCLUDED.updated_at,
        min_notice_minutes = COALESCE($8::int, sv.min_notice_minutes),
        max_advance_days = COALESCE($9::int, sv.max_advance_days),
        cancel_cutoff_hours = COALESCE($10::int, sv.cancel_cutoff_hours)
    WHERE sv.updated_at < EXCLUDED.updated_at AND sv.clinic_id = EXCLUDED.clinic_id
    RETURNING sv.id, sv.name, sv.price, sv.duration_minutes
), refreshed AS (
    UPDATE bookings b
    SET service_snapshot = b.service_snapshot || jsonb_build_object(
            'id', up.id, 'name', up.name, 'price', up.price::text, 'duration_minutes', up.duration_minutes),
        updated_at = now()
    FROM up
    WHERE b.service_id = up.id AND b.booking_time > now()
    RETURNING b.id
)
SELECT (SELECT count(*) FROM up) AS applied, (SELECT count(*) FROM refreshed) AS bookings_refreshed;
