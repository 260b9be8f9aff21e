-- 0013: the reservation.expired outbox payload in one place for both statements that expire holds:
-- reservations.hold (a slot's lapsed holds, when a new hold takes their unit) and reservations.expire_batch
-- (the expiry job), which until now built it in Python, one INSERT per hold. The payload is the model
-- booking_rpc.models.events.ReservationExpired in its own JSON form, plus the envelope every outbox payload
-- carries (event_type, event_id = the outbox row id, occurred_at), as booking_rpc.events.outbox.event_body
-- writes it for events made in Python. Plain SQL functions: the planner inlines them.
CREATE OR REPLACE FUNCTION booking_event_envelope(body jsonb, event_type text, event_id uuid) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT body || jsonb_build_object('event_type', event_type, 'event_id', event_id,
                                      'occurred_at', booking_iso_instant(now()))
$$;

CREATE OR REPLACE FUNCTION booking_reservation_expired(
    reservation_id uuid, user_id uuid, pet_id uuid, service_id uuid, slot_id uuid, expired_at timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('reservation_id', reservation_id, 'user_id', user_id, 'pet_id', pet_id,
                              'service_id', service_id, 'slot_id', slot_id,
                              'expired_at', booking_iso_instant(expired_at))
$$;
