"""Every CHECK, FOREIGN KEY, UNIQUE and NOT NULL of the schema rejects a violating row (table-driven).

One migrated database per module holds a small valid graph (service -> slot -> reservation -> booking ->
payment, ...); each case runs in a transaction that is rolled back, so cases cannot affect each other.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from booking_rpc.db.scratch import admin, create_database, drop_database

SERVICE = "00000000-0000-0000-0000-0000000000a1"
SLOT = "00000000-0000-0000-0000-0000000000b1"
RESERVATION = "00000000-0000-0000-0000-0000000000c1"
BOOKING = "00000000-0000-0000-0000-0000000000d1"
LOG = "00000000-0000-0000-0000-0000000000e1"
USER = "00000000-0000-0000-0000-000000000011"
PET = "00000000-0000-0000-0000-000000000022"
CLINIC = "00000000-0000-0000-0000-000000000033"
MISSING = "00000000-0000-0000-0000-00000000dead"

BASE = f"""
INSERT INTO services (id, clinic_id, name, price) VALUES ('{SERVICE}', '{CLINIC}', 'Checkup', 100.00);
INSERT INTO slots (id, service_id, slot_date, slot_start_time, slot_end_time, starts_at, ends_at, capacity)
VALUES ('{SLOT}', '{SERVICE}', '2030-01-01', '09:00', '09:30',
        '2030-01-01 02:00Z', '2030-01-01 02:30Z', 2);
INSERT INTO reservations (id, user_id, pet_id, service_id, slot_id, lock_id, expires_at, idempotency_key)
VALUES ('{RESERVATION}', '{USER}', '{PET}', '{SERVICE}', '{SLOT}', 'L1', now() + interval '10 minutes', 'k1');
INSERT INTO bookings
    (id, reservation_id, user_id, pet_id, clinic_id, service_id, slot_id, reference_code, amount)
VALUES ('{BOOKING}', '{RESERVATION}', '{USER}', '{PET}', '{CLINIC}', '{SERVICE}', '{SLOT}', 'REF1', 100.00);
INSERT INTO payments (booking_id, amount, payment_method) VALUES ('{BOOKING}', 100.00, 'card');
INSERT INTO financial_entries
    (booking_id, clinic_id, type, total_amount, platform_fee, clinic_amount, tax_amount)
VALUES ('{BOOKING}', '{CLINIC}', 'booking_payment', 100.00, 10.00, 79.00, 11.00);
INSERT INTO reviews (booking_id, user_id, clinic_id, service_id, rating)
VALUES ('{BOOKING}', '{USER}', '{CLINIC}', '{SERVICE}', 5);
INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time)
VALUES ('{BOOKING}', 'upcoming', now());
INSERT INTO booking_logs (id, booking_id) VALUES ('{LOG}', '{BOOKING}');
INSERT INTO event_subscriptions (name, host, port, patterns)
VALUES ('sub1', '127.0.0.1', 4000, '{{booking.*}}');
"""


def slot_insert(**over: str) -> str:
    cols = {
        "service_id": f"'{SERVICE}'",
        "staff_id": "NULL",
        "slot_date": "'2030-01-02'",
        "slot_start_time": "'09:00'",
        "slot_end_time": "'09:30'",
        "starts_at": "'2030-01-02 02:00Z'",
        "ends_at": "'2030-01-02 02:30Z'",
    } | over
    return f"INSERT INTO slots ({', '.join(cols)}) VALUES ({', '.join(cols.values())})"


def reservation_insert(**over: str) -> str:
    cols = {
        "user_id": f"'{USER}'",
        "pet_id": f"'{PET}'",
        "service_id": f"'{SERVICE}'",
        "slot_id": f"'{SLOT}'",
        "lock_id": "'L2'",
        "expires_at": "now() + interval '10 minutes'",
        "status": "'cancelled'",
    } | over
    return f"INSERT INTO reservations ({', '.join(cols)}) VALUES ({', '.join(cols.values())})"


def booking_insert(**over: str) -> str:
    cols = {
        "reservation_id": "NULL",
        "user_id": f"'{USER}'",
        "pet_id": f"'{PET}'",
        "clinic_id": f"'{CLINIC}'",
        "service_id": f"'{SERVICE}'",
        "slot_id": f"'{SLOT}'",
        "reference_code": "'REF2'",
        "amount": "50.00",
    } | over
    return f"INSERT INTO bookings ({', '.join(cols)}) VALUES ({', '.join(cols.values())})"


def entry_insert(total: str, fee: str, clinic: str, tax: str, **over: str) -> str:
    cols = {
        "booking_id": f"'{BOOKING}'",
        "clinic_id": f"'{CLINIC}'",
        "type": "'refund'",
        "total_amount": total,
        "platform_fee": fee,
        "clinic_amount": clinic,
        "tax_amount": tax,
    } | over
    return f"INSERT INTO financial_entries ({', '.join(cols)}) VALUES ({', '.join(cols.values())})"


CHECK = asyncpg.CheckViolationError
FK = asyncpg.ForeignKeyViolationError
UNIQUE = asyncpg.UniqueViolationError
NOT_NULL = asyncpg.NotNullViolationError
# ON DELETE RESTRICT reports 23503 on PostgreSQL 15 and 23001 (restrict_violation) on 18
RESTRICT = (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError)


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    error: (
        type[asyncpg.PostgresError] | tuple[type[asyncpg.PostgresError], ...] | None
    )  # None: the statement must be accepted
    constraint: str | None = None


CASES = [
    # --- CHECK
    Case("services.duration", "UPDATE services SET duration_minutes = 0", CHECK, "valid_duration"),
    Case("slots.status", "UPDATE slots SET status = 'gone'", CHECK, "slots_status_check"),
    Case("slots.times", "UPDATE slots SET slot_end_time = '08:00'", CHECK, "valid_slot_time"),
    Case("slots.booked<=capacity", "UPDATE slots SET booked_count = 3", CHECK, "valid_booked_count"),
    Case("slots.instants", "UPDATE slots SET ends_at = starts_at", CHECK, "valid_slot_instants"),
    Case("slots.capacity>0", "UPDATE slots SET capacity = 0", CHECK, "valid_capacity"),
    Case("slots.booked>=0", "UPDATE slots SET booked_count = -1", CHECK, "valid_booked_count_nonneg"),
    Case("reservations.status", "UPDATE reservations SET status = 'held'", CHECK, "reservations_status_check"),
    Case("bookings.status", "UPDATE bookings SET status = 'done'", CHECK, "bookings_status_check"),
    Case("payments.status", "UPDATE payments SET status = 'paid'", CHECK, "payments_status_check"),
    Case(
        "payments.refund_status",
        "UPDATE payments SET refund_status = 'x'",
        CHECK,
        "payments_refund_status_check",
    ),
    Case("payments.refund<=amount", "UPDATE payments SET refund_amount = 100.01", CHECK, "valid_refund"),
    Case("payments.amount>=0", "UPDATE payments SET amount = -1", CHECK, "valid_amount"),
    Case("payments.refund>=0", "UPDATE payments SET refund_amount = -1", CHECK, "valid_refund_nonneg"),
    Case("fe.type", entry_insert("1", "0", "1", "0", type="'bonus'"), CHECK, "financial_entries_type_check"),
    Case(
        "fe.status",
        entry_insert("1", "0", "1", "0", status="'lost'"),
        CHECK,
        "financial_entries_status_check",
    ),
    Case("fe.total>=0", entry_insert("-1", "0", "0", "0"), CHECK, "financial_entries_total_amount_check"),
    Case("fe.fee>=0", entry_insert("100", "-1", "90", "11"), CHECK, "financial_entries_platform_fee_check"),
    Case("fe.clinic>=0", entry_insert("100", "90", "-1", "11"), CHECK, "financial_entries_clinic_amount_check"),
    Case("fe.tax>=0", entry_insert("100", "10", "91", "-1"), CHECK, "financial_entries_tax_amount_check"),
    Case("fe.split", entry_insert("100", "10", "80", "11"), CHECK, "valid_split"),
    Case("fe.split.ok", entry_insert("100", "10", "79", "11"), None),
    Case("reviews.rating0", "UPDATE reviews SET rating = 0", CHECK, "reviews_rating_check"),
    Case("reviews.rating6", "UPDATE reviews SET rating = 6", CHECK, "reviews_rating_check"),
    Case(
        "notifications.type",
        f"INSERT INTO notifications (user_id, type, title) VALUES ('{USER}', 'spam', 't')",
        CHECK,
        "notifications_type_check",
    ),
    Case(
        "notifications.delivery_status",
        f"INSERT INTO notifications (user_id, type, title, delivery_status) VALUES ('{USER}', 'payment', 't', 'x')",
        CHECK,
        "notifications_delivery_status_check",
    ),
    Case(
        "attachments.file_size",
        f"INSERT INTO booking_attachments (booking_id, file_name, file_url, file_size) "
        f"VALUES ('{BOOKING}', 'a.pdf', 'https://x/a.pdf', -1)",
        CHECK,
        "booking_attachments_file_size_check",
    ),
    Case(
        "reminders.type",
        "UPDATE booking_reminders SET reminder_type = 'nag'",
        CHECK,
        "booking_reminders_reminder_type_check",
    ),
    Case(
        "reminders.status",
        "UPDATE booking_reminders SET status = 'x'",
        CHECK,
        "booking_reminders_status_check",
    ),
    Case(
        "subscriptions.port0",
        "UPDATE event_subscriptions SET port = 0",
        CHECK,
        "event_subscriptions_port_check",
    ),
    Case(
        "subscriptions.port65536",
        "UPDATE event_subscriptions SET port = 65536",
        CHECK,
        "event_subscriptions_port_check",
    ),
    Case(
        "subscriptions.codec",
        "UPDATE event_subscriptions SET codec = 'xml'",
        CHECK,
        "event_subscriptions_codec_check",
    ),
    # --- NOT NULL added to the seed's columns
    Case("slots.capacity.null", "UPDATE slots SET capacity = NULL", NOT_NULL),
    Case("slots.booked.null", "UPDATE slots SET booked_count = NULL", NOT_NULL),
    Case("slots.status.null", "UPDATE slots SET status = NULL", NOT_NULL),
    Case("slots.starts_at.null", "UPDATE slots SET starts_at = NULL", NOT_NULL),
    Case("outbox.published.null", "UPDATE booking_events_outbox SET published = NULL", NOT_NULL),
    Case("outbox.attempts.null", "UPDATE booking_events_outbox SET attempts = NULL", NOT_NULL),
    Case("clinics.updated_at.null", f"INSERT INTO clinics (id) VALUES ('{CLINIC}')", NOT_NULL),
    Case(
        "notifications.is_read.null",
        f"INSERT INTO notifications (user_id, type, title, is_read) VALUES ('{USER}', 'payment', 't', NULL)",
        NOT_NULL,
    ),
    # --- FOREIGN KEY
    Case("slots.service", slot_insert(service_id=f"'{MISSING}'"), FK, "fk_service"),
    Case("reservations.slot", reservation_insert(slot_id=f"'{MISSING}'"), FK, "fk_slot"),
    Case("reservations.service", reservation_insert(service_id=f"'{MISSING}'"), FK, "fk_service"),
    Case("bookings.reservation", booking_insert(reservation_id=f"'{MISSING}'"), FK, "fk_reservation"),
    Case("bookings.service", booking_insert(service_id=f"'{MISSING}'"), FK, "fk_service"),
    Case("bookings.slot", booking_insert(slot_id=f"'{MISSING}'"), FK, "fk_slot"),
    Case("bookings.slot.restrict", f"DELETE FROM slots WHERE id = '{SLOT}'", RESTRICT, "fk_slot"),
    Case("bookings.service.restrict", f"DELETE FROM services WHERE id = '{SERVICE}'", RESTRICT, "fk_service"),
    Case(
        "payments.booking",
        f"INSERT INTO payments (booking_id, amount, payment_method) VALUES ('{MISSING}', 1, 'card')",
        FK,
        "fk_booking",
    ),
    Case("fe.booking", entry_insert("1", "0", "1", "0", booking_id=f"'{MISSING}'"), FK, "fk_booking"),
    Case(
        "reviews.booking",
        f"INSERT INTO reviews (booking_id, user_id, clinic_id, service_id, rating) "
        f"VALUES ('{MISSING}', '{USER}', '{CLINIC}', '{SERVICE}', 3)",
        FK,
        "fk_booking",
    ),
    Case("reviews.service", f"UPDATE reviews SET service_id = '{MISSING}'", FK, "fk_service"),
    Case(
        "notifications.booking",
        f"INSERT INTO notifications (user_id, booking_id, type, title) VALUES ('{USER}', '{MISSING}', 'payment', 't')",
        FK,
        "fk_booking",
    ),
    Case(
        "notifications.booking.null",
        f"INSERT INTO notifications (user_id, type, title) VALUES ('{USER}', 'payment', 't')",
        None,
    ),
    Case("logs.booking", f"INSERT INTO booking_logs (booking_id) VALUES ('{MISSING}')", FK, "fk_booking"),
    Case(
        "log_entries.log",
        f"INSERT INTO booking_log_entries (log_id, action, status) VALUES ('{MISSING}', 'a', 's')",
        FK,
        "fk_log",
    ),
    Case(
        "reminders.booking",
        f"INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time) "
        f"VALUES ('{MISSING}', 'check_in', now())",
        FK,
        "fk_booking",
    ),
    Case(
        "attachments.booking",
        f"INSERT INTO booking_attachments (booking_id, file_name, file_url) VALUES ('{MISSING}', 'a', 'u')",
        FK,
        "fk_booking",
    ),
    # --- UNIQUE
    Case("slots.unique", slot_insert(slot_date="'2030-01-01'"), UNIQUE, "uq_slots_service_staff_start"),
    Case("slots.unique.other_staff", slot_insert(slot_date="'2030-01-01'", staff_id=f"'{USER}'"), None),
    Case(
        "reservations.idempotency",
        reservation_insert(idempotency_key="'k1'"),
        UNIQUE,
        "uq_reservations_user_idempotency",
    ),
    Case("reservations.idempotency.null_keys", reservation_insert() + "; " + reservation_insert(), None),
    Case(
        "reservations.one_pending_hold",
        reservation_insert(status="'pending'"),
        UNIQUE,
        "uq_reservations_pending_user_slot",
    ),
    Case("reservations.cancelled_beside_pending", reservation_insert(status="'expired'"), None),
    Case(
        "bookings.reservation.unique",
        booking_insert(reservation_id=f"'{RESERVATION}'"),
        UNIQUE,
        "uq_bookings_reservation",
    ),
    Case(
        "bookings.reference.unique",
        booking_insert(reference_code="'REF1'"),
        UNIQUE,
        "bookings_reference_code_key",
    ),
    Case(
        "payments.booking.unique",
        f"INSERT INTO payments (booking_id, amount, payment_method) VALUES ('{BOOKING}', 1, 'card')",
        UNIQUE,
        "uq_payments_booking",
    ),
    Case(
        "fe.booking_type.unique",
        entry_insert("1", "0", "1", "0", type="'booking_payment'"),
        UNIQUE,
        "uq_financial_entries_booking_type",
    ),
    Case(
        "reviews.booking.unique",
        f"INSERT INTO reviews (booking_id, user_id, clinic_id, service_id, rating) "
        f"VALUES ('{BOOKING}', '{USER}', '{CLINIC}', '{SERVICE}', 3)",
        UNIQUE,
        "uq_reviews_booking",
    ),
    Case(
        "reminders.booking_type.pending_unique",
        f"INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time) "
        f"VALUES ('{BOOKING}', 'upcoming', now())",
        UNIQUE,
        "uq_booking_reminders_pending_type",
    ),
    Case(  # a rescheduled booking's cancelled reminders stay beside its new ones (migration 0026)
        "reminders.booking_type.cancelled_kept",
        f"INSERT INTO booking_reminders (booking_id, reminder_type, scheduled_time, status) "
        f"VALUES ('{BOOKING}', 'upcoming', now(), 'cancelled')",
        None,
        None,
    ),
    Case(
        "subscriptions.name.unique",
        "INSERT INTO event_subscriptions (name, host, port, patterns) VALUES ('sub1', 'h', 1, '{x}')",
        UNIQUE,
        "event_subscriptions_name_key",
    ),
]


@pytest.fixture(scope="module")
def graph_db(pg_base_dsn: str, template_db: str) -> Iterator[str]:
    name = f"booking_rpc_t_{secrets.token_hex(6)}"
    dsn = asyncio.run(create_database(pg_base_dsn, name, template=template_db))
    try:
        asyncio.run(admin(dsn, BASE))
        yield dsn
    finally:
        asyncio.run(drop_database(pg_base_dsn, name))


@pytest.fixture
async def conn(graph_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(graph_db)
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_constraint(conn: asyncpg.Connection, case: Case) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        if case.error is None:
            await conn.execute(case.sql)
            return
        with pytest.raises(case.error) as info:
            await conn.execute(case.sql)
        if case.constraint is not None:
            assert info.value.as_dict().get("constraint_name") == case.constraint
    finally:
        await tx.rollback()


async def test_base_graph_is_valid(conn: asyncpg.Connection) -> None:
    # the cases above mean something only if the unmodified rows are accepted
    assert await conn.fetchval("SELECT count(*) FROM bookings") == 1
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1
