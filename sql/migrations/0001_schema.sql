-- 0001_schema: the complete base schema of booking-rpc.
--
-- The seed's tables (services, slots, reservations, bookings, payments, booking_logs, booking_log_entries,
-- booking_reminders, booking_events_outbox, the two materialized views) are copied from
-- shared/seed/booking-service-design.md; every addition is marked "added:" with the reason.
-- gen_random_uuid() is built in since PostgreSQL 13, so no extension is needed.

-- ---------------------------------------------------------------------------------------------------------
-- Local caches of data other services own. Filled from their user/pet/clinic.updated events so that
-- bookings can take snapshots (and a clinic's time zone is known for slot generation) without a remote call.
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE clinics (
    id UUID PRIMARY KEY,
    name TEXT,
    address TEXT,
    phone_number TEXT,
    -- Slot DATE+TIME are clinic-local; this zone turns them into UTC instants.
    timezone TEXT NOT NULL DEFAULT 'UTC',
    -- updated_at of the last applied event: an older event must not overwrite newer data.
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE TABLE users (
    id UUID PRIMARY KEY,
    email TEXT,
    full_name TEXT,
    phone_number TEXT,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE TABLE pets (
    id UUID PRIMARY KEY,
    name TEXT,
    species TEXT,
    breed TEXT,
    owner_id UUID NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);

-- ---------------------------------------------------------------------------------------------------------
-- services (seed)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE services (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id UUID NOT NULL,
    name VARCHAR(255) NOT NULL,
    description TEXT,
    price DECIMAL(12,2) NOT NULL,
    duration_minutes INTEGER NOT NULL DEFAULT 30,
    requires_approval BOOLEAN DEFAULT FALSE,
    is_available BOOLEAN DEFAULT TRUE,
    availability_exceptions JSONB DEFAULT '[]',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT valid_duration CHECK (duration_minutes > 0)
);

CREATE INDEX idx_services_clinic ON services(clinic_id);
CREATE INDEX idx_services_price ON services(price);
CREATE INDEX idx_services_availability ON services(is_available);

-- ---------------------------------------------------------------------------------------------------------
-- slots (seed + additions)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE slots (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    service_id UUID NOT NULL,
    staff_id UUID,
    slot_date DATE NOT NULL,
    slot_start_time TIME NOT NULL,
    slot_end_time TIME NOT NULL,
    -- added: NOT NULL on status/capacity/booked_count. A NULL counter makes every CHECK below evaluate to
    -- NULL, which PostgreSQL treats as passing, so the capacity rules would silently stop applying.
    status VARCHAR(20) NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'booked', 'blocked')),
    capacity INTEGER NOT NULL DEFAULT 1,
    booked_count INTEGER NOT NULL DEFAULT 0,
    -- added: the UTC instants of the clinic-local DATE+TIME (which carry no zone), computed in the clinic's
    -- time zone when slots are generated, so "in the past" and DST are decided once, correctly.
    starts_at TIMESTAMP WITH TIME ZONE NOT NULL,
    ends_at TIMESTAMP WITH TIME ZONE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_service FOREIGN KEY(service_id) REFERENCES services(id) ON DELETE CASCADE,
    CONSTRAINT valid_slot_time CHECK (slot_end_time > slot_start_time),
    CONSTRAINT valid_booked_count CHECK (booked_count <= capacity),
    -- added: a slot is a real interval.
    CONSTRAINT valid_slot_instants CHECK (ends_at > starts_at),
    -- added: a slot nobody can book is a blocked slot, not capacity 0.
    CONSTRAINT valid_capacity CHECK (capacity > 0),
    -- added: a negative counter means a unit was given back twice (capacity drift); refuse it.
    CONSTRAINT valid_booked_count_nonneg CHECK (booked_count >= 0),
    -- added: generating slots twice for the same range must not create duplicates (ON CONFLICT DO NOTHING);
    -- NULLS NOT DISTINCT so slots without a staff member are deduplicated too.
    CONSTRAINT uq_slots_service_staff_start
        UNIQUE NULLS NOT DISTINCT (service_id, staff_id, slot_date, slot_start_time)
);

CREATE INDEX idx_slots_service ON slots(service_id);
CREATE INDEX idx_slots_staff ON slots(staff_id);
CREATE INDEX idx_slots_date_time ON slots(slot_date, slot_start_time);
CREATE INDEX idx_slots_status ON slots(status);
-- added: keyset pagination of a service's slots over a date range.
CREATE INDEX idx_slots_service_keyset ON slots(service_id, slot_date, slot_start_time, id);
-- added: range queries on real instants (availability, "not in the past").
CREATE INDEX idx_slots_service_starts ON slots(service_id, starts_at);

-- ---------------------------------------------------------------------------------------------------------
-- reservations (seed + additions)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE reservations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    pet_id UUID NOT NULL,
    service_id UUID NOT NULL,
    slot_id UUID NOT NULL,
    lock_id VARCHAR(100) NOT NULL,
    status VARCHAR(20) DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'cancelled', 'expired')),
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    -- added: a retried create with the same key returns the first reservation instead of a second hold.
    idempotency_key VARCHAR(200) NULL,
    -- added: hash of the first request's body; same key with another body is a conflict, not a replay.
    request_fingerprint TEXT NULL,
    -- added: when the hold became a booking.
    confirmed_at TIMESTAMP WITH TIME ZONE NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_service FOREIGN KEY(service_id) REFERENCES services(id) ON DELETE CASCADE,
    CONSTRAINT fk_slot FOREIGN KEY(slot_id) REFERENCES slots(id) ON DELETE CASCADE,
    -- added: idempotency keys are per user (NULL keys are distinct, so requests without a key are unaffected).
    CONSTRAINT uq_reservations_user_idempotency UNIQUE (user_id, idempotency_key)
);

CREATE INDEX idx_reservations_user ON reservations(user_id);
CREATE INDEX idx_reservations_service ON reservations(service_id);
CREATE INDEX idx_reservations_slot ON reservations(slot_id);
CREATE INDEX idx_reservations_status ON reservations(status);
CREATE INDEX idx_reservations_expiry ON reservations(expires_at);
-- added: one live hold per user and slot; a double click cannot take two units.
CREATE UNIQUE INDEX uq_reservations_pending_user_slot ON reservations(user_id, slot_id) WHERE status = 'pending';
-- added: the expired holds of a slot are released in the same transaction that takes a unit from it.
CREATE INDEX idx_reservations_slot_pending_expiry ON reservations(slot_id, expires_at) WHERE status = 'pending';
-- added: the expiry job finds expired pending holds without scanning finished ones.
CREATE INDEX idx_reservations_pending_expiry ON reservations(expires_at) WHERE status = 'pending';

-- ---------------------------------------------------------------------------------------------------------
-- bookings (seed + additions)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE bookings (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    reservation_id UUID,
    user_id UUID NOT NULL,
    pet_id UUID NOT NULL,
    clinic_id UUID NOT NULL,
    service_id UUID NOT NULL,
    slot_id UUID NOT NULL,
    payment_id UUID,
    reference_code VARCHAR(20) NOT NULL UNIQUE,
    amount DECIMAL(12,2) NOT NULL,
    status VARCHAR(20) DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'in-progress', 'completed', 'cancelled', 'no-show')),
    cancellation_reason TEXT,
    notes TEXT,
    pet_snapshot JSONB DEFAULT '{}',
    service_snapshot JSONB DEFAULT '{}',
    booking_time TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_reservation FOREIGN KEY(reservation_id) REFERENCES reservations(id) ON DELETE SET NULL,
    CONSTRAINT fk_service FOREIGN KEY(service_id) REFERENCES services(id) ON DELETE RESTRICT,
    CONSTRAINT fk_slot FOREIGN KEY(slot_id) REFERENCES slots(id) ON DELETE RESTRICT,
    -- added: one booking per reservation; two concurrent confirms cannot both create a booking.
    CONSTRAINT uq_bookings_reservation UNIQUE (reservation_id)
);

CREATE INDEX idx_bookings_user ON bookings(user_id);
CREATE INDEX idx_bookings_clinic ON bookings(clinic_id);
CREATE INDEX idx_bookings_service ON bookings(service_id);
CREATE INDEX idx_bookings_slot ON bookings(slot_id);
CREATE INDEX idx_bookings_reference ON bookings(reference_code);
CREATE INDEX idx_bookings_status ON bookings(status);
CREATE INDEX idx_bookings_booking_time ON bookings(booking_time);
CREATE INDEX idx_bookings_created ON bookings(created_at);
-- added: keyset pagination of a user's and a clinic's bookings by time.
CREATE INDEX idx_bookings_user_time ON bookings(user_id, booking_time, id);
CREATE INDEX idx_bookings_clinic_time ON bookings(clinic_id, booking_time, id);

-- ---------------------------------------------------------------------------------------------------------
-- payments (seed + additions)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE payments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    external_reference VARCHAR(100),
    amount DECIMAL(12,2) NOT NULL,
    currency VARCHAR(3) DEFAULT 'IDR',
    payment_method VARCHAR(50) NOT NULL,
    status VARCHAR(20) DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'success', 'failed', 'refunded')),
    payment_details JSONB,
    paid_at TIMESTAMP WITH TIME ZONE,
    refund_status VARCHAR(20) DEFAULT NULL CHECK (refund_status IS NULL OR refund_status IN ('pending', 'processing', 'completed', 'failed')),
    refund_amount DECIMAL(12,2),
    refunded_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE,
    CONSTRAINT valid_refund CHECK (refund_amount IS NULL OR refund_amount <= amount),
    -- added: one payment per booking (the ERD's 1:1); a retried payment call cannot charge twice.
    CONSTRAINT uq_payments_booking UNIQUE (booking_id),
    -- added: money is never negative.
    CONSTRAINT valid_amount CHECK (amount >= 0),
    CONSTRAINT valid_refund_nonneg CHECK (refund_amount IS NULL OR refund_amount >= 0)
);

CREATE INDEX idx_payments_booking ON payments(booking_id);
CREATE INDEX idx_payments_status ON payments(status);
CREATE INDEX idx_payments_external_ref ON payments(external_reference);
CREATE INDEX idx_payments_refund_status ON payments(refund_status) WHERE refund_status IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------
-- financial_entries (ERD only in the seed; DDL ours)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE financial_entries (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    clinic_id UUID NOT NULL,
    type VARCHAR(30) NOT NULL CHECK (type IN ('booking_payment', 'refund')),
    total_amount DECIMAL(12,2) NOT NULL CHECK (total_amount >= 0),
    platform_fee DECIMAL(12,2) NOT NULL CHECK (platform_fee >= 0),
    clinic_amount DECIMAL(12,2) NOT NULL CHECK (clinic_amount >= 0),
    tax_amount DECIMAL(12,2) NOT NULL CHECK (tax_amount >= 0),
    currency VARCHAR(3) NOT NULL DEFAULT 'IDR',
    status VARCHAR(30) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'ready_for_settlement', 'settled', 'reversed')),
    settlement_date TIMESTAMP WITH TIME ZONE,
    settlement_details JSONB,
    transaction_reference VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE,
    -- the split must account for every cent: no money appears or vanishes in rounding.
    CONSTRAINT valid_split CHECK (platform_fee + clinic_amount + tax_amount = total_amount),
    -- one entry of each type per booking; a retried payment or refund cannot book revenue twice.
    CONSTRAINT uq_financial_entries_booking_type UNIQUE (booking_id, type)
);

-- settlement runs select a clinic's entries by status.
CREATE INDEX idx_financial_entries_clinic_status ON financial_entries(clinic_id, status);

-- ---------------------------------------------------------------------------------------------------------
-- reviews (ERD only in the seed; DDL ours)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE reviews (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    user_id UUID NOT NULL,
    clinic_id UUID NOT NULL,
    service_id UUID NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment TEXT,
    attachments JSONB DEFAULT '[]',
    is_verified BOOLEAN NOT NULL DEFAULT FALSE,
    is_published BOOLEAN NOT NULL DEFAULT TRUE,
    ratings_breakdown JSONB DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE,
    CONSTRAINT fk_service FOREIGN KEY(service_id) REFERENCES services(id) ON DELETE CASCADE,
    -- one review per booking: a resubmit is an edit, not a second vote.
    CONSTRAINT uq_reviews_booking UNIQUE (booking_id)
);

-- a service's and a clinic's review listings and averages.
CREATE INDEX idx_reviews_service ON reviews(service_id);
CREATE INDEX idx_reviews_clinic ON reviews(clinic_id);

-- ---------------------------------------------------------------------------------------------------------
-- notifications (ERD only in the seed; DDL ours)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE notifications (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    -- nullable: some notifications (e.g. a payment notice) need not belong to one booking.
    booking_id UUID NULL,
    type VARCHAR(40) NOT NULL CHECK (type IN ('booking_confirmed', 'booking_cancelled', 'booking_status_changed',
                                              'booking_completed', 'reminder', 'review_request', 'payment')),
    title VARCHAR(255) NOT NULL,
    content TEXT,
    metadata JSONB DEFAULT '{}',
    is_read BOOLEAN NOT NULL DEFAULT FALSE,
    read_at TIMESTAMP WITH TIME ZONE,
    delivery_status VARCHAR(20) NOT NULL DEFAULT 'pending' CHECK (delivery_status IN ('pending', 'sent', 'failed')),
    delivery_attempts JSONB NOT NULL DEFAULT '[]',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE
);

-- a user's inbox, newest first, keyset-paginated.
CREATE INDEX idx_notifications_user_created ON notifications(user_id, created_at DESC, id);
-- the unread badge counts only unread rows.
CREATE INDEX idx_notifications_user_unread ON notifications(user_id) WHERE NOT is_read;

-- ---------------------------------------------------------------------------------------------------------
-- booking_logs, booking_log_entries (seed)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE booking_logs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE
);

CREATE INDEX idx_booking_logs_booking ON booking_logs(booking_id);

CREATE TABLE booking_log_entries (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    log_id UUID NOT NULL,
    action VARCHAR(100) NOT NULL,
    status VARCHAR(50) NOT NULL,
    previous_state JSONB,
    new_state JSONB,
    performed_by UUID,
    notes TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_log FOREIGN KEY(log_id) REFERENCES booking_logs(id) ON DELETE CASCADE
);

CREATE INDEX idx_booking_log_entries_log ON booking_log_entries(log_id);
CREATE INDEX idx_booking_log_entries_action ON booking_log_entries(action);
CREATE INDEX idx_booking_log_entries_created ON booking_log_entries(created_at);

-- ---------------------------------------------------------------------------------------------------------
-- booking_reminders (seed + additions)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE booking_reminders (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    reminder_type VARCHAR(50) NOT NULL CHECK (reminder_type IN ('upcoming', 'check_in', 'follow_up', 'review_request')),
    scheduled_time TIMESTAMP WITH TIME ZONE NOT NULL,
    status VARCHAR(20) DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    delivery_channels JSONB DEFAULT '["email"]',
    sent_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE,
    -- added: planning reminders twice (retry, reschedule) must not schedule the same reminder twice.
    CONSTRAINT uq_booking_reminders_booking_type UNIQUE (booking_id, reminder_type)
);

CREATE INDEX idx_booking_reminders_booking ON booking_reminders(booking_id);
CREATE INDEX idx_booking_reminders_scheduled ON booking_reminders(scheduled_time);
CREATE INDEX idx_booking_reminders_status ON booking_reminders(status);
-- added: the reminder job finds due reminders without scanning sent/cancelled ones.
CREATE INDEX idx_booking_reminders_due ON booking_reminders(scheduled_time) WHERE status = 'pending';

-- ---------------------------------------------------------------------------------------------------------
-- booking_attachments (ERD only in the seed; DDL ours)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE booking_attachments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id UUID NOT NULL,
    file_name VARCHAR(255) NOT NULL,
    file_url TEXT NOT NULL,
    file_type VARCHAR(100),
    description TEXT,
    file_size BIGINT CHECK (file_size >= 0),
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    uploaded_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT fk_booking FOREIGN KEY(booking_id) REFERENCES bookings(id) ON DELETE CASCADE
);

-- a booking's attachments are always listed by booking.
CREATE INDEX idx_booking_attachments_booking ON booking_attachments(booking_id);

-- ---------------------------------------------------------------------------------------------------------
-- booking_events_outbox (seed + what a reliable relay needs)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE booking_events_outbox (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_type VARCHAR(50) NOT NULL,
    aggregate_id UUID NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    -- added: NOT NULL, so "unpublished" is exactly "published = false" (a NULL would hide a row forever).
    published BOOLEAN NOT NULL DEFAULT FALSE,
    published_at TIMESTAMP WITH TIME ZONE,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- added: insertion order; the relay delivers each aggregate's events in seq order.
    seq BIGSERIAL NOT NULL,
    -- added: retry with backoff: a failed row is not retried before this instant.
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    last_error TEXT,
    -- added: given up after N attempts (dead letter); blocks only its own aggregate.
    dead BOOLEAN NOT NULL DEFAULT FALSE,
    -- added: a relay claims rows with a lease, so a crashed relay's rows are taken over after lease_until.
    lease_token UUID,
    lease_until TIMESTAMP WITH TIME ZONE
);

CREATE INDEX idx_booking_events_outbox_unpublished
ON booking_events_outbox(published)
WHERE published = FALSE;

CREATE INDEX idx_booking_events_outbox_aggregate
ON booking_events_outbox(aggregate_type, aggregate_id);

-- added: each aggregate's oldest pending event (per-aggregate order).
CREATE INDEX idx_booking_events_outbox_pending_aggregate
ON booking_events_outbox(aggregate_id, seq) WHERE NOT published AND NOT dead;
-- added: rows that are due for (re)delivery.
CREATE INDEX idx_booking_events_outbox_pending_due
ON booking_events_outbox(next_attempt_at) WHERE NOT published AND NOT dead;

-- added: wake the relay when events are written. NOTIFY is delivered at commit and only as a hint (it may be
-- lost), so the relay still polls; one notification per statement is enough.
CREATE FUNCTION booking_outbox_notify() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('booking_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER booking_outbox_notify
AFTER INSERT ON booking_events_outbox
FOR EACH STATEMENT EXECUTE FUNCTION booking_outbox_notify();

-- The seed's booking trigger. Changed: payloads carry event_type, event_id (= the outbox row id, generated
-- first so consumers can deduplicate) and occurred_at; amount is a JSON string like all money on the wire;
-- booking.created also carries pet_id.
CREATE OR REPLACE FUNCTION booking_event_trigger() RETURNS TRIGGER AS $$
DECLARE
    payload JSONB;
    event_id UUID := gen_random_uuid();
BEGIN
    IF TG_OP = 'INSERT' THEN
        payload = jsonb_build_object(
            'event_type', 'booking.created',
            'event_id', event_id,
            'occurred_at', now(),
            'booking_id', NEW.id,
            'reference_code', NEW.reference_code,
            'user_id', NEW.user_id,
            'pet_id', NEW.pet_id,
            'clinic_id', NEW.clinic_id,
            'service_id', NEW.service_id,
            'amount', to_jsonb(NEW.amount::text),
            'status', NEW.status,
            'created_at', NEW.created_at
        );

        INSERT INTO booking_events_outbox (
            id,
            aggregate_type,
            aggregate_id,
            event_type,
            payload
        ) VALUES (
            event_id,
            'booking',
            NEW.id,
            'booking.created',
            payload
        );
    ELSIF TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status THEN
        payload = jsonb_build_object(
            'event_type', 'booking.status_changed',
            'event_id', event_id,
            'occurred_at', now(),
            'booking_id', NEW.id,
            'reference_code', NEW.reference_code,
            'previous_status', OLD.status,
            'new_status', NEW.status,
            'changed_at', now()
        );

        INSERT INTO booking_events_outbox (
            id,
            aggregate_type,
            aggregate_id,
            event_type,
            payload
        ) VALUES (
            event_id,
            'booking',
            NEW.id,
            'booking.status_changed',
            payload
        );
    END IF;

    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER booking_event_trigger
AFTER INSERT OR UPDATE ON bookings
FOR EACH ROW EXECUTE FUNCTION booking_event_trigger();

-- ---------------------------------------------------------------------------------------------------------
-- Materialized views (seed), each with the UNIQUE index REFRESH MATERIALIZED VIEW CONCURRENTLY requires,
-- so a refresh does not block readers of the dashboard.
-- ---------------------------------------------------------------------------------------------------------

CREATE MATERIALIZED VIEW upcoming_bookings_view AS
SELECT
    b.id,
    b.reference_code,
    b.user_id,
    b.pet_id,
    b.clinic_id,
    b.service_id,
    s.name AS service_name,
    b.amount,
    b.status,
    sl.slot_date,
    sl.slot_start_time,
    sl.slot_end_time
FROM bookings b
JOIN services s ON b.service_id = s.id
JOIN slots sl ON b.slot_id = sl.id
WHERE b.status = 'confirmed'
AND (sl.slot_date > CURRENT_DATE OR (sl.slot_date = CURRENT_DATE AND sl.slot_start_time > CURRENT_TIME))
ORDER BY sl.slot_date, sl.slot_start_time;

CREATE UNIQUE INDEX uq_upcoming_bookings_view_id ON upcoming_bookings_view(id);

CREATE MATERIALIZED VIEW booking_completion_rates AS
SELECT
    DATE_TRUNC('month', b.created_at) AS month,
    COUNT(*) AS total_bookings,
    COUNT(CASE WHEN b.status = 'completed' THEN 1 END) AS completed_bookings,
    COUNT(CASE WHEN b.status = 'cancelled' THEN 1 END) AS cancelled_bookings,
    COUNT(CASE WHEN b.status = 'no-show' THEN 1 END) AS no_show_bookings,
    ROUND((COUNT(CASE WHEN b.status = 'completed' THEN 1 END)::numeric / COUNT(*)) * 100, 2) AS completion_rate,
    ROUND((COUNT(CASE WHEN b.status = 'cancelled' THEN 1 END)::numeric / COUNT(*)) * 100, 2) AS cancellation_rate
FROM bookings b
GROUP BY DATE_TRUNC('month', b.created_at);

CREATE UNIQUE INDEX uq_booking_completion_rates_month ON booking_completion_rates(month);

-- ---------------------------------------------------------------------------------------------------------
-- event_subscriptions: subscribers registered at run time (the relay also delivers to each of these).
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE event_subscriptions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT UNIQUE NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    patterns TEXT[] NOT NULL,
    codec TEXT NOT NULL DEFAULT 'json' CHECK (codec IN ('json', 'msgpack')),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now()
);
