-- uq_reservations_pending_user_slot led with user_id. A cached generic plan made while `reservations` was
-- small could pick it for "the pending holds of slot $1" (reservations.hold gives back a slot's expired
-- holds on every new hold) and then scan every pending hold of every slot per hold: a hold got slower as
-- holds piled up. Slot first, the same uniqueness also serves that lookup, whichever index the plan takes.
DROP INDEX uq_reservations_pending_user_slot;
CREATE UNIQUE INDEX uq_reservations_pending_user_slot ON reservations(slot_id, user_id) WHERE status = 'pending';
