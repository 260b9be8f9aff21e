-- Statements only the benches run (bulk data); the service's own are in sql/queries/.

-- name: bench.fill_series
-- Bulk data for the benches: service $1 gets $2 staff members (UUIDs derived from $3 + n) x days from $4,
-- $5 days x 20 thirty-minute slots per day (08:00-18:00 UTC), capacity $6. Existing rows are kept.
INSERT INTO slots (service_id, staff_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at,
                   capacity)
SELECT $1,
       ('00000000-0000-0000-' || lpad(to_hex($3::int), 4, '0') || '-' || lpad(to_hex(st), 12, '0'))::uuid,
       ($4::date + d),
       time '08:00' + make_interval(mins => 30 * k),
       time '08:30' + make_interval(mins => 30 * k),
       ($4::date + d + time '08:00' + make_interval(mins => 30 * k)) AT TIME ZONE 'UTC',
       ($4::date + d + time '08:30' + make_interval(mins => 30 * k)) AT TIME ZONE 'UTC',
       $6
FROM generate_series(1, $2::int) AS st,
     generate_series(0, $5::int - 1) AS d,
     generate_series(0, 19) AS k
ON CONFLICT ON CONSTRAINT uq_slots_service_staff_start DO NOTHING;
