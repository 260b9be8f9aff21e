-- Services of the clinics (the catalogue): written by staff or the service.updated event, read openly.

-- name: services.get
-- One service with its clinic's time zone (UTC when the clinic isn't cached yet).
SELECT sv.id, sv.clinic_id, sv.name, sv.description, sv.price, sv.duration_minutes,
       COALESCE(sv.requires_approval, FALSE) AS requires_approval,
       COALESCE(sv.is_available, FALSE) AS is_available,
       COALESCE(sv.availability_exceptions, '[]'::jsonb) AS availability_exceptions,
       sv.min_notice_minutes, sv.max_advance_days, sv.cancel_cutoff_hours,
       sv.created_at, sv.updated_at,
       COALESCE(c.timezone, 'UTC') AS timezone
FROM services sv
LEFT JOIN clinics c ON c.id = sv.clinic_id
WHERE sv.id = $1;

-- name: services.upsert
-- Create service $1 or update it ($10..$12: the booking window, migration 0015). A service never moves to another clinic: when $1 exists under another
-- clinic, nothing is written and no row is returned.
INSERT INTO services AS sv (id, clinic_id, name, description, price, duration_minutes, requires_approval,
                            is_available, availability_exceptions, min_notice_minutes, max_advance_days,
                            cancel_cutoff_hours)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name,
    description = EXCLUDED.description,
    price = EXCLUDED.price,
    duration_minutes = EXCLUDED.duration_minutes,
    requires_approval = EXCLUDED.requires_approval,
    is_available = EXCLUDED.is_available,
    availability_exceptions = EXCLUDED.availability_exceptions,
    min_notice_minutes = EXCLUDED.min_notice_minutes,
    max_advance_days = EXCLUDED.max_advance_days,
    cancel_cutoff_hours = EXCLUDED.cancel_cutoff_hours,
    updated_at = now()
WHERE sv.clinic_id = EXCLUDED.clinic_id
RETURNING sv.id, sv.clinic_id, sv.name, sv.description, sv.price, sv.duration_minutes,
          COALESCE(sv.requires_approval, FALSE) AS requires_approval,
          COALESCE(sv.is_available, FALSE) AS is_available,
          COALESCE(sv.availability_exceptions, '[]'::jsonb) AS availability_exceptions,
          sv.min_notice_minutes, sv.max_advance_days, sv.cancel_cutoff_hours,
          sv.created_at, sv.updated_at;

-- name: services.find
-- One keyset page of clinic $1's services by (name, id), only available ones when $2, after cursor
-- ($3 name, $4 id; the first page passes ('', nil uuid)), $5 rows.
SELECT sv.id, sv.clinic_id, sv.name, sv.description, sv.price, sv.duration_minutes,
       COALESCE(sv.requires_approval, FALSE) AS requires_approval,
       COALESCE(sv.is_available, FALSE) AS is_available,
       COALESCE(sv.availability_exceptions, '[]'::jsonb) AS availability_exceptions,
       sv.min_notice_minutes, sv.max_advance_days, sv.cancel_cutoff_hours,
       sv.created_at, sv.updated_at
FROM services sv
WHERE sv.clinic_id = $1
  AND (NOT $2::bool OR sv.is_available IS TRUE)
  AND (sv.name, sv.id) > ($3::text, $4::uuid)
ORDER BY sv.name, sv.id
LIMIT $5;
