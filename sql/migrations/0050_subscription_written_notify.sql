-- A written subscription (booking.subscriptions.create, re-registering, a move, a delete) NOTIFYs the relays
-- ('subscription:' || name on booking_outbox). Why: the relays re-read the subscriptions only every few seconds,
-- and a subscriber's loop that found it down waits for its failed head's backoff, up to a poll interval, heedless
-- of commits; a subscriber that comes back and says so is served at once by every replica's relay, which
-- re-reads the subscriptions and makes that subscriber's failed deliveries due. Subscriptions are written
-- rarely: the notification lock this NOTIFY takes at commit is not the writers' (migration 0032).
CREATE FUNCTION booking_subscription_notify() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('booking_outbox', 'subscription:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.name ELSE NEW.name END);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER booking_subscription_notify
AFTER INSERT OR UPDATE OR DELETE ON event_subscriptions
FOR EACH ROW EXECUTE FUNCTION booking_subscription_notify();
