-- 0041: the waitlist. A user waits for one slot, or for any slot of a service on a (clinic-local) date.
-- When a unit of a slot frees (a cancelled hold or booking, an expired hold, a reschedule away, an unblock),
-- the first waiter in order gets a real hold on it in the same transaction (waitlist.offer), so nobody can
-- take the unit between its release and the offer. An offered entry keeps its reservation; what became of
-- the offer (booked, declined, expired) is read from that reservation, never copied.
CREATE TABLE waitlist_entries (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    pet_id UUID NOT NULL,
    service_id UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    -- the target: one slot, or the service on a date (exactly one of the two)
    slot_id UUID NULL REFERENCES slots(id) ON DELETE CASCADE,
    slot_date DATE NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'offered', 'left')),
    reservation_id UUID NULL REFERENCES reservations(id) ON DELETE SET NULL,
    offered_at TIMESTAMP WITH TIME ZONE NULL,
    -- queue order (first come, first offered)
    seq BIGSERIAL NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT valid_waitlist_target CHECK ((slot_id IS NULL) <> (slot_date IS NULL))
);

-- one waiting entry per user and target
CREATE UNIQUE INDEX uq_waitlist_waiting_user_slot ON waitlist_entries(slot_id, user_id)
    WHERE status = 'waiting' AND slot_id IS NOT NULL;
CREATE UNIQUE INDEX uq_waitlist_waiting_user_date ON waitlist_entries(service_id, slot_date, user_id)
    WHERE status = 'waiting' AND slot_date IS NOT NULL;
-- the queue of a slot and of a service's date, in order
CREATE INDEX idx_waitlist_slot_queue ON waitlist_entries(slot_id, seq) WHERE status = 'waiting' AND slot_id IS NOT NULL;
CREATE INDEX idx_waitlist_date_queue ON waitlist_entries(service_id, slot_date, seq)
    WHERE status = 'waiting' AND slot_date IS NOT NULL;
CREATE INDEX idx_waitlist_user ON waitlist_entries(user_id, created_at);

-- Whether anyone waits for slot $1 (of service $2 on date $3). While someone does, a hold past its TTL
-- still occupies its unit: it goes to the first waiter (the expiry job's offer), not to whoever holds next.
CREATE FUNCTION booking_waiters_exist(slot_id uuid, service_id uuid, slot_date date) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM waitlist_entries e WHERE e.slot_id = $1 AND e.status = 'waiting')
        OR EXISTS (SELECT 1 FROM waitlist_entries e
                   WHERE e.service_id = $2 AND e.slot_date = $3 AND e.status = 'waiting')
$$;

-- The units of a slot's holds past their TTL (`stale`) that count as free: all of them, unless someone
-- waits for the slot. The one definition of "occupied" the hold, the diagnosis and the search share.
CREATE FUNCTION booking_free_stale(stale int, slot_id uuid, service_id uuid, slot_date date) RETURNS int
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN stale = 0 THEN 0 WHEN booking_waiters_exist(slot_id, service_id, slot_date) THEN 0
                ELSE stale END
$$;

-- Whether a slot (its status, booked_count, capacity) has a unit to give when `freed` of its units are held
-- by lapsed holds that count as free (booking_free_stale): the other half of the one rule for "occupied",
-- shared by everything that takes a unit (reservations.hold, slots.take_unit, waitlist.offer) and by the
-- search (slots.find). A full slot is 'booked' and has a unit only through its lapsed holds.
CREATE FUNCTION booking_unit_free(status text, booked_count int, capacity int, freed int) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT booked_count - freed < capacity AND (status = 'available' OR (status = 'booked' AND freed > 0))
$$;

-- The reservation.created payload (booking_rpc.models.events.ReservationCreated's own JSON), for both
-- statements that create holds: reservations.hold and waitlist.offer.
CREATE FUNCTION booking_reservation_created(
    reservation_id uuid, user_id uuid, pet_id uuid, service_id uuid, slot_id uuid, expires_at timestamptz,
    created_at timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('reservation_id', reservation_id, 'user_id', user_id, 'pet_id', pet_id,
                              'service_id', service_id, 'slot_id', slot_id,
                              'expires_at', booking_iso_instant(expires_at),
                              'created_at', booking_iso_instant(created_at))
$$;

-- An unguessable hold token made by SQL (the service makes its own with secrets.token_urlsafe): 32 bytes
-- from two random UUIDs' digests, base64url without padding, 43 characters.
CREATE FUNCTION booking_new_lock_id() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT translate(encode(decode(md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text), 'hex'),
                            'base64'), '+/=', '-_')
$$;

-- Whether service `sv` takes holds now on a slot starting at `starts_at` on local date `slot_date`: not
-- started (database clock), the service available, no availability exception that day, inside the booking
-- window (0015). The slot's own state (status, capacity) is each statement's: reservations.hold also takes
-- lapsed units, waitlist.offer only free ones.
CREATE FUNCTION booking_open_for_holds(sv services, starts_at timestamptz, slot_date date) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT starts_at > now()
       AND sv.is_available IS TRUE
       AND NOT EXISTS (SELECT 1 FROM booking_exceptions_on(sv.availability_exceptions, slot_date))
       AND booking_window_refusal(starts_at, slot_date, now(),
                                  (SELECT c.timezone FROM clinics c WHERE c.id = sv.clinic_id),
                                  sv.min_notice_minutes, sv.max_advance_days) IS NULL
$$;
