-- Reservations: temporary holds on a unit of slot capacity (lock_id + expires_at on the database clock).

-- name: reservations.hold
-- A hold, as one statement (so one transaction and one round trip): $1 user, $2 pet, $3 service, $4 slot,
-- $5 lock_id, $6 TTL seconds, $7 idempotency key, $8 request fingerprint (NULL without a key), $9 / $10 the
-- most pending holds a user / a pet may have (migration 0018's hold_quotas, kept by trigger), $11 the trace
-- context its events carry (JSON text, '' for none; NULL, as callers pass it: the session's
-- booking.trace_context, the column's own default, migration 0035). With tracing on, the traced connection
-- fills $11 in, so a hold sets no session setting first: no extra round trip per hold.
--   1. The slot's pending holds past their TTL are locked and counted (holds first, then the slot: the
--      order the expiry job and cancel use); their units count as free, so a late expiry job never turns a
--      customer away, unless someone waits for the slot: then they stay for the waiters (booking_free_stale).
--   1b. The user's and then the pet's hold_quotas row is upserted only while its count is under the limit:
--      a concurrent hold of the same user waits on that row and re-checks the committed count, so no
--      number of concurrent requests gets past the limit. Nothing is taken when either refuses.
--   2. One conditional UPDATE takes a unit: it waits only on this slot's row and can never push
--      booked_count past capacity (booking_unit_free and booking_open_for_holds, migration 0041: the rule
--      slots.take_unit and waitlist.offer take units by).
--   3. Only when it took one: those holds become 'expired', the reservation row is inserted, and one outbox
--      row per event is written: reservation.expired for each of them, reservation.created for the new one
--      (payload = the models in booking_rpc/models/events.py, plus event_type, event_id = the outbox row
--      id, occurred_at; instants as booking_iso_instant writes them, the models' own JSON form;
--      reservation.expired and the envelope are migration 0013's functions, shared with expire_batch).
-- Returns the new reservation's id and `reservation`, its ReservationOut JSON (the reply, built here so the
-- service never decodes or re-encodes the row: three timestamptz values cost asyncpg's decoder more than
-- the rest of the row, and rendering it again costs the service as much), or no row and no change when
-- nothing was taken (gone, wrong service, blocked, full, in the past on the database clock, service
-- unavailable, an availability exception on the slot's date, outside the service's booking window:
-- migration 0015); slots.diagnose tells which. The JSON is the model's as the service writes it: its key
-- order, the compact form JSON.stringify writes, instants booking_iso_instant's (migrations 0011, 0017),
-- strings as to_json escapes them (as orjson does; tests/handlers/test_reservations.py holds the two equal).
-- Unique violations roll it all back: uq_reservations_user_idempotency (a racing retry),
-- uq_reservations_pending_user_slot (already held).
WITH stale AS (
    SELECT id
    FROM reservations
    WHERE slot_id = $4 AND status = 'pending' AND expires_at <= now()
    FOR UPDATE
), freed AS (
    -- while someone waits for the slot, its lapsed holds keep their units for the waiters (migration 0041)
    SELECT booking_free_stale(count(*)::int, $4, $3, (SELECT sl.slot_date FROM slots sl WHERE sl.id = $4)) AS n
    FROM stale
), user_quota AS (
    INSERT INTO hold_quotas AS q (owner_kind, owner_id, pending) VALUES ('user', $1, 0)
    ON CONFLICT (owner_kind, owner_id) DO UPDATE SET pending = q.pending WHERE q.pending < $9::int
    RETURNING q.owner_id
), pet_quota AS (
    INSERT INTO hold_quotas AS q (owner_kind, owner_id, pending) SELECT 'pet', $2, 0 FROM user_quota
    ON CONFLICT (owner_kind, owner_id) DO UPDATE SET pending = q.pending WHERE q.pending < $10::int
    RETURNING q.owner_id
), taken AS (
    UPDATE slots s
    SET booked_count = s.booked_count - f.n + 1,
        status = CASE WHEN s.booked_count - f.n + 1 >= s.capacity THEN 'booked' ELSE 'available' END,
        updated_at = now()
    FROM services sv, freed f
    WHERE s.id = $4
      AND s.service_id = $3
      AND sv.id = s.service_id
      AND EXISTS (SELECT 1 FROM pet_quota)
      AND booking_unit_free(s.status, s.booked_count, s.capacity, f.n)
      AND booking_open_for_holds(sv, s.starts_at, s.slot_date)
    RETURNING s.id
), expired AS (
    UPDATE reservations r
    SET status = 'expired', updated_at = now()
    FROM stale st, freed f
    WHERE r.id = st.id AND f.n > 0 AND EXISTS (SELECT 1 FROM taken)
    RETURNING r.id, r.user_id, r.pet_id, r.service_id, r.slot_id, r.expires_at
), inserted AS (
    INSERT INTO reservations (user_id, pet_id, service_id, slot_id, lock_id, status, expires_at,
                              idempotency_key, request_fingerprint)
    SELECT $1, $2, $3, t.id, $5, 'pending', now() + make_interval(secs => $6::int), $7, $8
    -- reading `expired` here runs it first: the user's own lapsed hold on this slot no longer counts as held
    FROM taken t, (SELECT count(*) FROM expired) AS done
    RETURNING id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at, idempotency_key,
              created_at, updated_at
), events AS MATERIALIZED (
    SELECT gen_random_uuid() AS id, e.id AS aggregate_id, 'reservation.expired' AS event_type,
           booking_reservation_expired(e.id, e.user_id, e.pet_id, e.service_id, e.slot_id, e.expires_at) AS body
    FROM expired e
    UNION ALL
    SELECT gen_random_uuid(), i.id, 'reservation.created',
           booking_reservation_created(i.id, i.user_id, i.pet_id, i.service_id, i.slot_id, i.expires_at,
                                       i.created_at)
    FROM inserted i
), announced AS (
    INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload, trace_context)
    SELECT id, 'reservation', aggregate_id, event_type, booking_event_envelope(body, event_type, id),
           nullif(coalesce($11::text, current_setting('booking.trace_context', true)), '')::jsonb
    FROM events
)
SELECT id,
       '{"id":"' || id::text || '","user_id":"' || user_id::text || '","pet_id":"' || pet_id::text
           || '","service_id":"' || service_id::text || '","slot_id":"' || slot_id::text
           || '","lock_id":' || to_json(lock_id)::text || ',"status":' || COALESCE(to_json(status)::text, 'null')
           || ',"expires_at":"' || booking_iso_instant(expires_at)
           || '","idempotency_key":' || COALESCE(to_json(idempotency_key)::text, 'null')
           || ',"created_at":' || COALESCE('"' || booking_iso_instant(created_at) || '"', 'null')
           || ',"updated_at":' || COALESCE('"' || booking_iso_instant(updated_at) || '"', 'null') || '}'
           AS reservation
FROM inserted;

-- name: reservations.get_by_idempotency
-- The reservation a user made with an idempotency key, if any.
SELECT id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at, idempotency_key,
       request_fingerprint, created_at, updated_at
FROM reservations
WHERE user_id = $1 AND idempotency_key = $2;

-- name: reservations.get
-- One reservation; `live` = pending and not past its TTL on the database clock.
SELECT id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at, idempotency_key,
       request_fingerprint, created_at, updated_at,
       (status = 'pending' AND expires_at > now()) AS live
FROM reservations
WHERE id = $1;

-- name: reservations.cancel
-- Release a live hold early: compare-and-swap on id $1 + lock_id $2 + pending + unexpired. The caller
-- gives the unit back with slots.release_unit in the same transaction.
UPDATE reservations
SET status = 'cancelled', updated_at = now()
WHERE id = $1 AND lock_id = $2 AND status = 'pending' AND expires_at > now()
RETURNING id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at, idempotency_key,
          request_fingerprint, created_at, updated_at;

-- name: reservations.expire_batch
-- The expiry job: up to $1 pending holds past their TTL, claimed with SKIP LOCKED (safe with several
-- replicas), marked 'expired', their units given back per slot, and one reservation.expired outbox row
-- written for each (the payload as reservations.hold writes it: migration 0013). Slots are locked in id
-- order so two replicas (or a replica and a multi-slot writer) don't deadlock. Returns the holds expired.
WITH due AS (
    SELECT id
    FROM reservations
    WHERE status = 'pending' AND expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE reservations r
    SET status = 'expired', updated_at = now()
    FROM due
    WHERE r.id = due.id AND r.status = 'pending'
    RETURNING r.id, r.user_id, r.pet_id, r.service_id, r.slot_id, r.expires_at
), per_slot AS (
    SELECT slot_id, count(*)::int AS n FROM expired GROUP BY slot_id
), locked AS (
    SELECT s.id FROM slots s WHERE s.id IN (SELECT slot_id FROM per_slot) ORDER BY s.id FOR UPDATE
), released AS (
    UPDATE slots s
    SET booked_count = s.booked_count - p.n,
        status = CASE WHEN s.status = 'booked' THEN 'available' ELSE s.status END,
        updated_at = now()
    FROM per_slot p
    WHERE s.id = p.slot_id AND s.id IN (SELECT id FROM locked)
    RETURNING s.id
), events AS MATERIALIZED (
    SELECT gen_random_uuid() AS event_id, e.* FROM expired e
), announced AS (
    INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
    SELECT event_id, 'reservation', id, 'reservation.expired',
           booking_event_envelope(booking_reservation_expired(id, user_id, pet_id, service_id, slot_id, expires_at),
                                  'reservation.expired', event_id)
    FROM events
    ORDER BY expires_at, id
)
SELECT id, user_id, pet_id, service_id, slot_id, expires_at FROM events ORDER BY expires_at, id;

-- name: reservations.hold_quota
-- Whether user $1 (at most $3 pending holds) or pet $2 (at most $4) is at the limit: why a hold took nothing.
SELECT COALESCE(max(pending) FILTER (WHERE owner_kind = 'user' AND owner_id = $1), 0) >= $3::int AS user_at_limit,
       COALESCE(max(pending) FILTER (WHERE owner_kind = 'pet' AND owner_id = $2), 0) >= $4::int AS pet_at_limit
FROM hold_quotas
WHERE (owner_kind = 'user' AND owner_id = $1) OR (owner_kind = 'pet' AND owner_id = $2);
