-- Reservations: temporary holds on a unit of slot capacity (lock_id + expires_at on the database clock).

-- name: reservations.release_expired_for_slot
-- Give back the units of slot $1's pending holds past their TTL, in the transaction that is about to take
-- a unit from it, so a late expiry job never turns a customer away. Returns the holds now 'expired' (one
-- reservation.expired event each). Locks the holds first, then the slot, like the expiry job and cancel.
WITH expired AS (
    UPDATE reservations
    SET status = 'expired', updated_at = now()
    WHERE slot_id = $1 AND status = 'pending' AND expires_at <= now()
    RETURNING id, user_id, pet_id, service_id, slot_id, expires_at
), released AS (
    UPDATE slots
    SET booked_count = booked_count - (SELECT count(*) FROM expired)::int,
        status = CASE WHEN status = 'booked' THEN 'available' ELSE status END,
        updated_at = now()
    WHERE id = $1 AND EXISTS (SELECT 1 FROM expired)
    RETURNING id
)
SELECT id, user_id, pet_id, service_id, slot_id, expires_at FROM expired;

-- name: reservations.insert
-- The hold itself: $1 user, $2 pet, $3 service, $4 slot, $5 lock_id, $6 TTL seconds, $7 idempotency key,
-- $8 request fingerprint. Unique violations: uq_reservations_user_idempotency (a racing retry) and
-- uq_reservations_pending_user_slot (this user already holds the slot).
INSERT INTO reservations (user_id, pet_id, service_id, slot_id, lock_id, status, expires_at,
                          idempotency_key, request_fingerprint)
VALUES ($1, $2, $3, $4, $5, 'pending', now() + make_interval(secs => $6::int), $7, $8)
RETURNING id, user_id, pet_id, service_id, slot_id, lock_id, status, expires_at, idempotency_key,
          request_fingerprint, created_at, updated_at;

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
-- replicas), marked 'expired', their units given back per slot. Slots are locked in id order so two
-- replicas (or a replica and a multi-slot writer) don't deadlock. Returns the holds (one event each).
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
)
SELECT id, user_id, pet_id, service_id, slot_id, expires_at FROM expired ORDER BY expires_at, id;
