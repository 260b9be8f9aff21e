-- 0021: the booking trigger's events (booking.created, booking.status_changed) write their instants in the
-- one form every other event uses (booking_iso_instant, 0011: "2030-01-01T09:30:00Z"), not to_jsonb's, which
-- follows the session's TimeZone and trims trailing zeros. The payloads are otherwise as in 0001.
CREATE OR REPLACE FUNCTION booking_event_trigger() RETURNS TRIGGER AS $$
DECLARE
    payload JSONB;
    event_id UUID := gen_random_uuid();
BEGIN
    IF TG_OP = 'INSERT' THEN
        payload = jsonb_build_object(
            'event_type', 'booking.created',
            'event_id', event_id,
            'occurred_at', booking_iso_instant(now()),
            'booking_id', NEW.id,
            'reference_code', NEW.reference_code,
            'user_id', NEW.user_id,
            'pet_id', NEW.pet_id,
            'clinic_id', NEW.clinic_id,
            'service_id', NEW.service_id,
            'amount', to_jsonb(NEW.amount::text),
            'status', NEW.status,
            'created_at', booking_iso_instant(NEW.created_at)
        );
        INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
        VALUES (event_id, 'booking', NEW.id, 'booking.created', payload);
    ELSIF TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status THEN
        payload = jsonb_build_object(
            'event_type', 'booking.status_changed',
            'event_id', event_id,
            'occurred_at', booking_iso_instant(now()),
            'booking_id', NEW.id,
            'reference_code', NEW.reference_code,
            'previous_status', OLD.status,
            'new_status', NEW.status,
            'changed_at', booking_iso_instant(now())
        );
        INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
        VALUES (event_id, 'booking', NEW.id, 'booking.status_changed', payload);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
