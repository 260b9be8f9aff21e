-- Waitlist: users waiting for a slot, or for any slot of a service on a date (migration 0041).

-- name: waitlist.offer
-- Slot $1 has just had units freed in the caller's transaction: its first waiters in order (one per free
-- unit; waiters for the slot and for its service's date share one queue) each get a real hold of $2
-- seconds, in this statement, so no other hold can take the unit in between. The slot must be bookable as
-- reservations.hold would require (available, not past, service available, no exception, inside the booking
-- window). An offer is a pending hold like any other, so it counts toward its user's and pet's hold quotas
-- ($3 / $4, reservations.hold's $9 / $10; the 0018 triggers count it) and respects them: a waiter whose
-- user or pet already has that many pending holds is passed over for this unit and keeps their place for
-- the next one. Waiters and their quota rows are locked SKIP LOCKED: one being offered another slot, or
-- holding one, right now is passed over, not waited for (this statement already holds the slot's row, and
-- a hold takes the quota rows before the slot's: waiting here could deadlock), and the locked quota rows
-- are re-read at their latest version, so concurrent holds and offers cannot take a user past the quota.
-- waitlist.join made the quota rows. Writes reservation.created and waitlist.offered for each (aggregate:
-- the reservation, in that order). Returns the offers made.
WITH target AS MATERIALIZED (
    SELECT s.id, s.service_id, s.slot_date, s.slot_start_time, s.starts_at, s.capacity - s.booked_count AS free
    FROM slots s
    JOIN services sv ON sv.id = s.service_id
    WHERE s.id = $1
      AND booking_unit_free(s.status, s.booked_count, s.capacity, 0)
      AND booking_open_for_holds(sv, s.starts_at, s.slot_date)
    FOR UPDATE OF s
), picked AS MATERIALIZED (
    SELECT e.id, e.user_id, e.pet_id, gen_random_uuid() AS reservation_id
    FROM target t
    JOIN waitlist_entries e
      ON e.slot_id = t.id OR (e.slot_id IS NULL AND e.service_id = t.service_id AND e.slot_date = t.slot_date)
    JOIN hold_quotas qu ON qu.owner_kind = 'user' AND qu.owner_id = e.user_id
    JOIN hold_quotas qp ON qp.owner_kind = 'pet' AND qp.owner_id = e.pet_id
    WHERE e.status = 'waiting'
      AND qu.pending < $3::int
      AND qp.pending < $4::int
      AND NOT EXISTS (SELECT 1 FROM reservations r
                      WHERE r.slot_id = t.id AND r.user_id = e.user_id AND r.status = 'pending')
    ORDER BY e.seq
    LIMIT (SELECT free FROM target)
    FOR UPDATE OF e, qu, qp SKIP LOCKED
), offered AS (
    -- a user waiting both for the slot and for its date gets one hold (the second insert does nothing)
    INSERT INTO reservations (id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at)
    SELECT p.reservation_id, p.user_id, p.pet_id, t.service_id, t.id, booking_new_lock_id(), 'pending',
           now() + make_interval(secs => $2::int)
    FROM picked p, target t
    ON CONFLICT (slot_id, user_id) WHERE status = 'pending' DO NOTHING
    RETURNING id, user_id, pet_id, service_id, slot_id, lock_id, expires_at, created_at
), taken AS (
    UPDATE slots s
    SET booked_count = s.booked_count + o.n,
        status = CASE WHEN s.booked_count + o.n >= s.capacity THEN 'booked' ELSE s.status END,
        updated_at = now()
    FROM (SELECT count(*)::int AS n FROM offered) o
    WHERE s.id = $1 AND o.n > 0
    RETURNING s.id
), marked AS (
    UPDATE waitlist_entries e
    SET status = 'offered', reservation_id = o.id, offered_at = now(), updated_at = now()
    FROM picked p
    JOIN offered o ON o.id = p.reservation_id
    CROSS JOIN target t
    WHERE e.id = p.id
    RETURNING e.id AS entry_id, e.user_id, e.pet_id, e.service_id, t.id AS slot_id, t.slot_date,
              t.slot_start_time, t.starts_at, o.id AS reservation_id, o.lock_id, o.expires_at, o.created_at,
              e.offered_at
), events AS MATERIALIZED (
    SELECT gen_random_uuid() AS id, o.id AS aggregate_id, 'reservation.created' AS event_type, 1 AS ord,
           booking_reservation_created(o.id, o.user_id, o.pet_id, o.service_id, o.slot_id, o.expires_at,
                                       o.created_at) AS body
    FROM offered o
    UNION ALL
    SELECT gen_random_uuid(), m.reservation_id, 'waitlist.offered', 2,
           jsonb_build_object('entry_id', m.entry_id, 'user_id', m.user_id, 'pet_id', m.pet_id,
                              'service_id', m.service_id, 'slot_id', m.slot_id, 'slot_date', m.slot_date,
                              'slot_time', to_char(m.slot_start_time, 'HH24:MI:SS'),
                              'starts_at', booking_iso_instant(m.starts_at),
                              'reservation_id', m.reservation_id, 'lock_id', m.lock_id,
                              'expires_at', booking_iso_instant(m.expires_at),
                              'offered_at', booking_iso_instant(m.offered_at))
    FROM marked m
), announced AS (
    INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
    SELECT id, 'reservation', aggregate_id, event_type, booking_event_envelope(body, event_type, id)
    FROM events
    ORDER BY aggregate_id, ord
)
SELECT entry_id, user_id, slot_id, reservation_id, lock_id, expires_at FROM marked;

-- name: waitlist.unserved
-- Whether slot $1 still has a free unit while someone under the hold quotas ($2 per user, $3 per pet, as
-- waitlist.offer) waits for it: waitlist.offer passed them over because a concurrent offer or hold had
-- their quota row locked (jobs/offers.py tries again). Reads without locking.
SELECT EXISTS (
    SELECT 1
    FROM slots s
    JOIN services sv ON sv.id = s.service_id
    JOIN waitlist_entries e
      ON e.slot_id = s.id OR (e.slot_id IS NULL AND e.service_id = s.service_id AND e.slot_date = s.slot_date)
    JOIN hold_quotas qu ON qu.owner_kind = 'user' AND qu.owner_id = e.user_id
    JOIN hold_quotas qp ON qp.owner_kind = 'pet' AND qp.owner_id = e.pet_id
    WHERE s.id = $1
      AND booking_unit_free(s.status, s.booked_count, s.capacity, 0)
      AND booking_open_for_holds(sv, s.starts_at, s.slot_date)
      AND e.status = 'waiting'
      AND qu.pending < $2::int
      AND qp.pending < $3::int
      AND NOT EXISTS (SELECT 1 FROM reservations r
                      WHERE r.slot_id = s.id AND r.user_id = e.user_id AND r.status = 'pending')
);

-- name: waitlist.join
-- User $1 (pet $2) waits for slot $3 of service $4, or (slot NULL) for service $4 on date $5. Already
-- waiting for that target: nothing is written and no row is returned (the caller reads the entry). The
-- user's and the pet's hold_quotas rows are made if missing (pending 0), since waitlist.offer locks them.
WITH quota AS (
    INSERT INTO hold_quotas (owner_kind, owner_id, pending) VALUES ('user', $1, 0), ('pet', $2, 0)
    ON CONFLICT (owner_kind, owner_id) DO NOTHING
)
INSERT INTO waitlist_entries (user_id, pet_id, service_id, slot_id, slot_date)
VALUES ($1, $2, $4, $3, CASE WHEN $3::uuid IS NULL THEN $5::date END)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: waitlist.waiting_entry
-- User $1's waiting entry for slot $2, or (slot NULL) for service $3 on date $4.
SELECT id FROM waitlist_entries
WHERE user_id = $1 AND status = 'waiting'
  AND (($2::uuid IS NOT NULL AND slot_id = $2)
       OR ($2::uuid IS NULL AND slot_id IS NULL AND service_id = $3 AND slot_date = $4));

-- name: waitlist.free_slots_on
-- Slots of service $1 on date $2 with a unit free right now (a new date waiter may be offered one at once).
SELECT id FROM slots
WHERE service_id = $1 AND slot_date = $2 AND booking_unit_free(status, booked_count, capacity, 0)
  AND starts_at > now()
ORDER BY slot_start_time, id;

-- name: waitlist.leave
-- Entry $1 stops waiting (an offered one keeps its hold: cancel the reservation to give it back).
UPDATE waitlist_entries SET status = 'left', updated_at = now()
WHERE id = $1 AND status = 'waiting'
RETURNING id;

-- name: waitlist.find
-- Entries by user $1, slot $2, service $3, date $4, entry $5 (NULLs: any), only active ones (waiting, or
-- offered and not yet decided) when $6; in queue order, at most $7. `status` of an offered entry is what
-- became of its hold: offered (live), booked, declined (cancelled) or expired. `position` (waiting only)
-- is the place in its own target's queue, 1 = next.
SELECT e.id, e.user_id, e.pet_id, e.service_id, e.slot_id, e.slot_date, e.reservation_id, e.offered_at,
       e.created_at, sv.clinic_id, r.lock_id, r.expires_at,
       CASE WHEN e.status <> 'offered' THEN e.status
            WHEN r.status = 'confirmed' THEN 'booked'
            WHEN r.status = 'cancelled' THEN 'declined'
            WHEN r.status = 'pending' AND r.expires_at > now() THEN 'offered'
            ELSE 'expired' END AS status,
       CASE WHEN e.status = 'waiting' THEN (
           SELECT count(*)::int FROM waitlist_entries q
           WHERE q.status = 'waiting' AND q.seq <= e.seq
             AND ((e.slot_id IS NOT NULL AND q.slot_id = e.slot_id)
                  OR (e.slot_id IS NULL AND q.slot_id IS NULL AND q.service_id = e.service_id
                      AND q.slot_date = e.slot_date))) END AS position
FROM waitlist_entries e
JOIN services sv ON sv.id = e.service_id
LEFT JOIN reservations r ON r.id = e.reservation_id
WHERE ($1::uuid IS NULL OR e.user_id = $1)
  AND ($2::uuid IS NULL OR e.slot_id = $2)
  AND ($3::uuid IS NULL OR e.service_id = $3)
  AND ($4::date IS NULL OR e.slot_date = $4)
  AND ($5::uuid IS NULL OR e.id = $5)
  AND (NOT $6::bool OR e.status = 'waiting'
       OR (e.status = 'offered' AND r.status = 'pending' AND r.expires_at > now()))
ORDER BY e.seq
LIMIT $7::int;
