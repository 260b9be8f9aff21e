-- Pending holds per user and per pet, counted by trigger so that reservations.hold can refuse a caller
-- past BOOKING_RPC_MAX_ACTIVE_HOLDS_PER_USER / _PER_PET with a conditional upsert on the counter row: a
-- concurrent hold by the same user waits on that row and re-checks the committed count (as the slot's
-- booked_count does for capacity), so concurrency cannot bypass the limit. Every path that inserts,
-- confirms, cancels, expires or deletes a reservation keeps the count through the triggers; a pending hold
-- past its TTL still counts until it is given back (the expiry sweep, or a hold on its slot).
CREATE TABLE hold_quotas (
    owner_kind text NOT NULL CHECK (owner_kind IN ('user', 'pet')),
    owner_id uuid NOT NULL,
    pending int NOT NULL DEFAULT 0 CHECK (pending >= 0),
    PRIMARY KEY (owner_kind, owner_id)
);

INSERT INTO hold_quotas (owner_kind, owner_id, pending)
SELECT 'user', user_id, count(*) FROM reservations WHERE status = 'pending' GROUP BY user_id
UNION ALL
SELECT 'pet', pet_id, count(*) FROM reservations WHERE status = 'pending' GROUP BY pet_id;

-- The user's row before the pet's, always: every path locks the two in the same order.
CREATE FUNCTION booking_hold_quota_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'pending' THEN
        UPDATE hold_quotas SET pending = pending - 1 WHERE owner_kind = 'user' AND owner_id = OLD.user_id;
        UPDATE hold_quotas SET pending = pending - 1 WHERE owner_kind = 'pet' AND owner_id = OLD.pet_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'pending' THEN
        INSERT INTO hold_quotas (owner_kind, owner_id, pending)
        VALUES ('user', NEW.user_id, 1), ('pet', NEW.pet_id, 1)
        ON CONFLICT (owner_kind, owner_id) DO UPDATE SET pending = hold_quotas.pending + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER trg_reservations_hold_quota_insert
    AFTER INSERT ON reservations
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION booking_hold_quota_count();

CREATE TRIGGER trg_reservations_hold_quota_status
    AFTER UPDATE OF status, user_id, pet_id ON reservations
    FOR EACH ROW WHEN (OLD.status = 'pending' OR NEW.status = 'pending')
    EXECUTE FUNCTION booking_hold_quota_count();

CREATE TRIGGER trg_reservations_hold_quota_delete
    AFTER DELETE ON reservations
    FOR EACH ROW WHEN (OLD.status = 'pending')
    EXECUTE FUNCTION booking_hold_quota_count();
