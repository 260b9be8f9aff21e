// The NestJS 12 microservice the benches compare booking-rpc with: the same patterns doing the same work
// with the same named SQL statements (sql/queries/*.sql, read at start by queries.mjs), written as a NestJS
// developer writes one: controllers with @MessagePattern, DTOs checked by the ValidationPipe
// (class-validator), services with a node-postgres Pool injected, errors as RpcException in booking-rpc's
// error shape. Plain JavaScript with the decorators applied as TypeScript would emit them (no build step).
//   node peer.mjs --database-url postgresql://... [--port 0] [--pool 10] [--nagle]
//   node peer.mjs --database-url ... --nats nats://127.0.0.1:4222 [--queue booking-rpc]   (ServerNats)
//   node peer.mjs --print-sql     (the statements it loaded, as one JSON object: the tests compare them)
// Prints {"port": N} once listening (0 over NATS).
import 'reflect-metadata';
import { createHash, randomBytes, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller, Inject, Injectable, Module, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MessagePattern, Payload, RpcException, Transport } from '@nestjs/microservices';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsObject,
  IsOptional,
  IsString,
  IsUUID,
  Length,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateNested,
} from 'class-validator';
import pg from 'pg';
import { loadQueries } from './queries.mjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const SQL = loadQueries(arg('sql-dir', join(HERE, '..', '..', 'sql', 'queries')));
if (process.argv.includes('--print-sql')) {
  process.stdout.write(JSON.stringify(Object.fromEntries(SQL)) + '\n');
  process.exit(0);
}

// booking-rpc's defaults (booking_rpc/config.py): hold TTL, pending holds per user / per pet
const HOLD_TTL_SECONDS = 600;
const MAX_HOLDS_PER_USER = 3;
const MAX_HOLDS_PER_PET = 3;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';

// --- decorators, as tsc emits them --------------------------------------------------------------------

const decorateProperty = (cls, name, ...decorators) => decorators.forEach((d) => d(cls.prototype, name));
const decorateMethod = (cls, name, ...decorators) =>
  Reflect.decorate(decorators, cls.prototype, name, Object.getOwnPropertyDescriptor(cls.prototype, name));
// emitDecoratorMetadata: the DTO class of a handler's payload (what the ValidationPipe validates against)
const paramTypes = (cls, name, ...types) => Reflect.defineMetadata('design:paramtypes', types, cls.prototype, name);

// --- errors: booking-rpc's one shape ------------------------------------------------------------------

const STATUS = {
  VALIDATION_FAILED: 400, BAD_REQUEST: 400, UNAUTHENTICATED: 401, FORBIDDEN: 403, NOT_FOUND: 404,
  CONFLICT: 409, SLOT_FULL: 409, SLOT_BLOCKED: 409, SLOT_IN_PAST: 409, SERVICE_NOT_BOOKABLE: 409,
  AVAILABILITY_EXCEPTION: 409, TOO_SOON: 409, TOO_FAR_AHEAD: 409, ALREADY_HELD: 409,
  IDEMPOTENCY_CONFLICT: 409, LOCK_MISMATCH: 409, ALREADY_CONFIRMED: 409, ILLEGAL_TRANSITION: 409,
  RESERVATION_EXPIRED: 410, TOO_MANY_HOLDS: 429,
};
const rpcError = (code, message, details) =>
  new RpcException({ status: 'error', statusCode: STATUS[code] ?? 500, code, message, ...(details ? { details } : {}) });

const REASON_MESSAGES = {
  SERVICE_NOT_BOOKABLE: 'The service is not available for booking',
  AVAILABILITY_EXCEPTION: 'The service is not offered on this date',
  SLOT_IN_PAST: 'The slot has already started',
  SLOT_BLOCKED: 'The slot is blocked by the clinic',
  SLOT_FULL: 'The slot is fully booked',
  TOO_SOON: "The slot starts sooner than the service's minimum notice",
  TOO_FAR_AHEAD: "The slot is further ahead than the service's booking horizon",
};

// --- DTOs ---------------------------------------------------------------------------------------------

const DATE = /^\d{4}-\d{2}-\d{2}$/;

class ActorDto {}
decorateProperty(ActorDto, 'id', IsUUID());
decorateProperty(ActorDto, 'role', IsIn(['user', 'clinic_staff', 'admin', 'service']));
decorateProperty(ActorDto, 'clinic_id', IsOptional(), IsUUID());

const actorProperty = (cls) =>
  decorateProperty(cls, 'actor', IsOptional(), ValidateNested(), Type(() => ActorDto));

class SlotsFindDto {
  limit = 100;
  only_available = false;
}
actorProperty(SlotsFindDto);
decorateProperty(SlotsFindDto, 'service_id', IsUUID());
decorateProperty(SlotsFindDto, 'date_from', Matches(DATE));
decorateProperty(SlotsFindDto, 'date_to', Matches(DATE));
decorateProperty(SlotsFindDto, 'staff_id', IsOptional(), IsUUID());
decorateProperty(SlotsFindDto, 'only_available', IsBoolean());
decorateProperty(SlotsFindDto, 'limit', IsInt(), Min(1), Max(500));
decorateProperty(SlotsFindDto, 'cursor', IsOptional(), IsString());

class ReservationCreateDto {}
actorProperty(ReservationCreateDto);
decorateProperty(ReservationCreateDto, 'user_id', IsUUID());
decorateProperty(ReservationCreateDto, 'pet_id', IsUUID());
decorateProperty(ReservationCreateDto, 'service_id', IsUUID());
decorateProperty(ReservationCreateDto, 'slot_id', IsUUID());
decorateProperty(ReservationCreateDto, 'idempotency_key', IsOptional(), IsString(), Length(1, 200));

function requireSelf(actor, userId) {
  if (!actor) throw rpcError('UNAUTHENTICATED', 'This pattern needs an authenticated actor');
  if (actor.role === 'user' && actor.id !== userId) throw rpcError('FORBIDDEN', 'A user may act only on their own behalf');
  if (actor.role === 'clinic_staff') throw rpcError('FORBIDDEN', "Clinic staff cannot act on a user's behalf here");
  return actor;
}

// --- the database -------------------------------------------------------------------------------------

const PG_POOL = Symbol('PG_POOL');
pg.types.setTypeParser(1082, (v) => v); // date: 'YYYY-MM-DD' as is, not a local-midnight Date
// timestamptz (the session is in UTC): ISO 8601 with PostgreSQL's microseconds, "2030-01-01T09:30:00.123456Z",
// the form booking-rpc's replies and events carry (a JS Date would keep milliseconds only)
pg.types.setTypeParser(1184, (v) =>
  v.replace(' ', 'T').replace(/(?:\.(\d+))?\+00$/, (_, frac) => (frac ? `.${frac.padEnd(6, '0')}Z` : 'Z')),
);
// Named statements: node-postgres prepares each once per connection, as asyncpg does for booking-rpc.
const q = (name, values) => ({ name, text: SQL.get(name), values });

// --- waking the relays ---------------------------------------------------------------------------------

// What booking-rpc does after each transaction that may have written outbox rows (confirm's; a hold is one
// statement outside a transaction and signals nothing) (booking_rpc/events/relay.py, OutboxSignal):
// one NOTIFY per 50 ms at most, outside the writers' transactions, so relays elsewhere (here: booking-rpc's,
// which delivers the peer's events) hear of them at once instead of at their next poll.
const NOTIFY_COALESCE_MS = 50;
const NOTIFY_TOKEN = randomBytes(8).toString('hex');

class OutboxSignal {
  constructor(pool) {
    this.pool = pool;
    this.timer = null;
  }

  committed() {
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.pool.query(q('outbox.notify', [NOTIFY_TOKEN])).catch(() => {}); // the relays' poll finds them anyway
    }, NOTIFY_COALESCE_MS);
  }
}
Inject(PG_POOL)(OutboxSignal, undefined, 0); // constructor(@Inject(PG_POOL) pool)
const OutboxSignalProvider = Reflect.decorate([Injectable()], OutboxSignal);

// --- slots --------------------------------------------------------------------------------------------

const encodeCursor = (values) => Buffer.from(JSON.stringify(values)).toString('base64url');

function decodeCursor(cursor) {
  try {
    const values = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(values) && values.length === 3 && DATE.test(values[0])) return values;
  } catch { /* falls through */ }
  throw rpcError('BAD_REQUEST', 'The cursor is not valid', { field: 'cursor' });
}

class SlotsService {
  constructor(pool) { this.pool = pool; }

  async find(dto) {
    if (dto.date_to < dto.date_from) {
      throw rpcError('VALIDATION_FAILED', 'The payload is invalid', [
        { field: '(payload)', message: 'date_to must not be before date_from', type: 'value_error' },
      ]);
    }
    const after = dto.cursor ? decodeCursor(dto.cursor) : [dto.date_from, '00:00:00', NIL_UUID];
    const { rows: [row] } = await this.pool.query(q('slots.find', [
      dto.service_id, dto.date_from, dto.date_to, dto.staff_id ?? null, dto.only_available,
      after[0], after[1], after[2], dto.limit,
    ]));
    return {
      items: JSON.parse(row.items),
      next_cursor: row.has_more ? encodeCursor([row.last_date, row.last_time, row.last_id]) : null,
    };
  }
}
Inject(PG_POOL)(SlotsService, undefined, 0); // constructor(@Inject(PG_POOL) pool)
const SlotsServiceProvider = Reflect.decorate([Injectable()], SlotsService);

class SlotsController {
  constructor(slots) { this.slots = slots; }
  find(dto) { return this.slots.find(dto); }
}
Payload()(SlotsController.prototype, 'find', 0);
paramTypes(SlotsController, 'find', SlotsFindDto);
decorateMethod(SlotsController, 'find', MessagePattern('booking.slots.find'));
Reflect.defineMetadata('design:paramtypes', [SlotsServiceProvider], SlotsController);

// --- reservations -------------------------------------------------------------------------------------

const IDEMPOTENCY_CONSTRAINT = 'uq_reservations_user_idempotency';
const ONE_HOLD_CONSTRAINT = 'uq_reservations_pending_user_slot';

const fingerprint = (dto) =>
  createHash('sha256').update(`v1|${dto.pet_id}|${dto.service_id}|${dto.slot_id}`).digest('hex');

function reservationOut({ request_fingerprint, ...row }) {
  return row;
}

function replay(row, fp) {
  if (row.request_fingerprint !== fp) {
    throw rpcError('IDEMPOTENCY_CONFLICT', 'This idempotency key was already used for a different reservation request', {
      reservation_id: row.id,
    });
  }
  return reservationOut(row);
}

const localDate = (instant, timeZone) =>
  new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(instant);

function zoneOrUtc(name) {
  try {
    localDate(new Date(), name || 'UTC');
    return name || 'UTC';
  } catch {
    return 'UTC';
  }
}

// booking_rpc/domain/availability.py's unavailable_reason, on a slots.diagnose row
function unavailableReason(row) {
  const remaining = Math.max(0, row.capacity - row.booked_count + Number(row.stale));
  if (!row.service_available) return 'SERVICE_NOT_BOOKABLE';
  if (row.on_exception) return 'AVAILABILITY_EXCEPTION';
  if (row.in_past) return 'SLOT_IN_PAST';
  const now = Date.parse(row.db_now);
  if (Date.parse(row.starts_at) < now + row.min_notice_minutes * 60_000) return 'TOO_SOON';
  if (row.max_advance_days !== null) {
    const today = new Date(`${localDate(new Date(now), zoneOrUtc(row.timezone))}T00:00:00Z`);
    const horizon = new Date(today.getTime() + row.max_advance_days * 86_400_000).toISOString().slice(0, 10);
    if (row.slot_date > horizon) return 'TOO_FAR_AHEAD';
  }
  if (row.status === 'blocked') return 'SLOT_BLOCKED';
  if (remaining <= 0) return 'SLOT_FULL';
  return null;
}

class ReservationsService {
  constructor(pool) { this.pool = pool; }

  async create(dto) {
    requireSelf(dto.actor, dto.user_id);
    const fp = fingerprint(dto);
    const key = dto.idempotency_key ?? null;
    try {
      const client = await this.pool.connect();
      try {
        if (key !== null) {
          const { rows: [first] } = await client.query(q('reservations.get_by_idempotency', [dto.user_id, key]));
          if (first) return replay(first, fp);
        }
        const { rows: [row] } = await client.query(q('reservations.hold', [
          dto.user_id, dto.pet_id, dto.service_id, dto.slot_id, randomBytes(24).toString('base64url'),
          HOLD_TTL_SECONDS, key, fp, MAX_HOLDS_PER_USER, MAX_HOLDS_PER_PET, null, // null: no trace context
        ]));
        if (row) return JSON.parse(row.reservation); // the reply as the statement wrote it; no NOTIFY: booking-rpc
        // signals after transactions, not holds
        if (key !== null) { // a racing twin with this key may have taken the last unit
          const { rows: [first] } = await client.query(q('reservations.get_by_idempotency', [dto.user_id, key]));
          if (first) return replay(first, fp);
        }
        return await this.refuse(client, dto);
      } finally {
        client.release();
      }
    } catch (err) {
      if (err instanceof RpcException) throw err;
      const slot = { slot_id: dto.slot_id };
      if (err.code === '23505' && err.constraint === IDEMPOTENCY_CONSTRAINT && key !== null) {
        const { rows: [first] } = await this.pool.query(q('reservations.get_by_idempotency', [dto.user_id, key]));
        if (first) return replay(first, fp);
        throw rpcError('CONFLICT', 'A concurrent request with this idempotency key failed; retry');
      }
      if (err.code === '23505' && err.constraint === ONE_HOLD_CONSTRAINT) throw rpcError('ALREADY_HELD', 'You already hold this slot', slot);
      if (err.code === '23505') throw rpcError('CONFLICT', 'The reservation conflicts with another one');
      if (err.code === '23514') throw rpcError('SLOT_FULL', REASON_MESSAGES.SLOT_FULL, slot);
      if (err.code === '23503') throw rpcError('NOT_FOUND', 'Slot not found', slot);
      throw err;
    }
  }

  // the hold took nothing: say precisely why (read right after it)
  async refuse(client, dto) {
    const { rows: [quota] } = await client.query(
      q('reservations.hold_quota', [dto.user_id, dto.pet_id, MAX_HOLDS_PER_USER, MAX_HOLDS_PER_PET]),
    );
    if (quota && (quota.user_at_limit || quota.pet_at_limit)) {
      throw rpcError(
        'TOO_MANY_HOLDS',
        `${quota.user_at_limit ? 'You have' : 'This pet has'} as many pending holds as allowed: confirm or cancel one first`,
        { max_per_user: MAX_HOLDS_PER_USER, max_per_pet: MAX_HOLDS_PER_PET, limit: quota.user_at_limit ? 'user' : 'pet' },
      );
    }
    const { rows: [row] } = await client.query(q('slots.diagnose', [dto.slot_id, dto.user_id]));
    const details = { slot_id: dto.slot_id };
    if (!row || row.service_id !== dto.service_id) throw rpcError('NOT_FOUND', 'Slot not found', details);
    const reason = unavailableReason(row);
    if (reason !== null && reason !== 'SLOT_FULL') {
      if (reason === 'AVAILABILITY_EXCEPTION' && row.exception_reason) details.exception_reason = row.exception_reason;
      throw rpcError(reason, REASON_MESSAGES[reason], details);
    }
    if (row.held_by_user) throw rpcError('ALREADY_HELD', 'You already hold this slot', details);
    throw rpcError('SLOT_FULL', REASON_MESSAGES.SLOT_FULL, details);
  }
}
Inject(PG_POOL)(ReservationsService, undefined, 0); // constructor(@Inject(PG_POOL) pool)
const ReservationsServiceProvider = Reflect.decorate([Injectable()], ReservationsService);

class ReservationsController {
  constructor(reservations) { this.reservations = reservations; }
  create(dto) { return this.reservations.create(dto); }
}
Payload()(ReservationsController.prototype, 'create', 0);
paramTypes(ReservationsController, 'create', ReservationCreateDto);
decorateMethod(ReservationsController, 'create', MessagePattern('booking.reservation.create'));
Reflect.defineMetadata('design:paramtypes', [ReservationsServiceProvider], ReservationsController);

// --- bookings: confirm a hold, find a user's bookings -------------------------------------------------

// booking-rpc's defaults (booking_rpc/config.py): currency, platform fee and (inclusive) tax in percent
const CURRENCY = 'IDR';
const FEE_PERCENT = '10';
const TAX_PERCENT = '11';
const REFERENCE_ALPHABET = '23456789ABCDEFGHJKMNPQRSTVWXYZ';
const REFERENCE_ATTEMPTS = 8;
const REFERENCE_CONSTRAINT = 'bookings_reference_code_key';
const RESERVATION_CONSTRAINT = 'uq_bookings_reservation';
const BOOKING_STATUSES = ['pending_approval', 'confirmed', 'in-progress', 'completed', 'cancelled', 'no-show'];

class PaymentDto {
  status = 'pending';
}
decorateProperty(PaymentDto, 'method', IsString(), Length(1, 50));
decorateProperty(PaymentDto, 'external_reference', IsOptional(), IsString(), Length(1, 100));
decorateProperty(PaymentDto, 'status', IsIn(['pending', 'success']));
decorateProperty(PaymentDto, 'details', IsOptional(), IsObject());

class ConfirmDto {}
actorProperty(ConfirmDto);
decorateProperty(ConfirmDto, 'reservation_id', IsUUID());
decorateProperty(ConfirmDto, 'lock_id', IsString(), Length(1, 100));
decorateProperty(ConfirmDto, 'user_id', IsUUID());
decorateProperty(ConfirmDto, 'payment', IsOptional(), ValidateNested(), Type(() => PaymentDto));
decorateProperty(ConfirmDto, 'notes', IsOptional(), IsString(), MaxLength(5000));

class BookingFindDto {
  upcoming_only = false;
  sort = 'slot_time';
  limit = 20;
  include_total = false;
}
actorProperty(BookingFindDto);
decorateProperty(BookingFindDto, 'booking_id', IsOptional(), IsUUID());
decorateProperty(BookingFindDto, 'id', IsOptional(), IsUUID());
decorateProperty(BookingFindDto, 'reference_code', IsOptional(), IsString(), Length(1, 20));
decorateProperty(BookingFindDto, 'user_id', IsOptional(), IsUUID());
decorateProperty(BookingFindDto, 'clinic_id', IsOptional(), IsUUID());
decorateProperty(BookingFindDto, 'status', IsOptional(), IsArray(), ArrayMaxSize(6), IsIn(BOOKING_STATUSES, { each: true }));
decorateProperty(BookingFindDto, 'date_from', IsOptional(), Matches(DATE));
decorateProperty(BookingFindDto, 'date_to', IsOptional(), Matches(DATE));
decorateProperty(BookingFindDto, 'upcoming_only', IsBoolean());
decorateProperty(BookingFindDto, 'sort', IsIn(['slot_time', 'created_at']));
decorateProperty(BookingFindDto, 'limit', IsInt(), Min(1), Max(100));
decorateProperty(BookingFindDto, 'cursor', IsOptional(), IsString());
decorateProperty(BookingFindDto, 'include_total', IsBoolean());

// money in cents (BigInt), rounded half-even as booking_rpc/domain/money.py rounds it
const cents = (amount) => {
  const [whole, frac = ''] = String(amount).split('.');
  return BigInt(whole) * 100n + BigInt((frac + '00').slice(0, 2)) * (whole.startsWith('-') ? -1n : 1n);
};
const money = (c) => `${c / 100n}.${String(c % 100n).padStart(2, '0')}`;
function percentOf(total, percent) {
  const [whole, frac = ''] = percent.split('.');
  const scaled = BigInt(whole) * 10_000n + BigInt((frac + '0000').slice(0, 4)); // percent x 10^4
  const num = total * scaled;
  const den = 1_000_000n; // 100 (percent) x 10^4 (its scale)
  const q = num / den;
  const r = num % den;
  return 2n * r > den || (2n * r === den && q % 2n === 1n) ? q + 1n : q;
}
function split(totalAmount) {
  const total = cents(totalAmount);
  const fee = percentOf(total, FEE_PERCENT) < total ? percentOf(total, FEE_PERCENT) : total;
  const taxRaw = percentOf(total, TAX_PERCENT);
  const tax = taxRaw < total - fee ? taxRaw : total - fee;
  return { total: money(total), fee: money(fee), tax: money(tax), clinic: money(total - fee - tax) };
}

const REMINDERS = [
  ['upcoming', 'starts_at', -24 * 3_600_000],
  ['check_in', 'starts_at', 0],
  ['review_request', 'ends_at', 2 * 3_600_000],
  ['follow_up', 'ends_at', 24 * 3_600_000],
];
const planReminders = (r) =>
  REMINDERS.map(([kind, anchor, offset]) => [kind, Date.parse(r[anchor]) + offset])
    .filter(([, at]) => at > Date.parse(r.db_now))
    .map(([kind, at]) => [kind, new Date(at).toISOString()]);

// booking_rpc/domain/reference_codes.py: 8 symbols of 30, as BK-XXXX-XXXX
function referenceCode() {
  const body = Array.from({ length: 8 }, () => REFERENCE_ALPHABET[randomInt(REFERENCE_ALPHABET.length)]).join('');
  return `BK-${body.slice(0, 4)}-${body.slice(4)}`;
}

// an instant of now as pydantic writes one (microseconds): what booking-rpc's event envelopes carry
const nowInstant = () =>
  new Date().toISOString().replace(/\.(\d{3})Z$/, (_, ms) => (ms === '000' ? 'Z' : `.${ms}000Z`));

function bookingOut(row) {
  return {
    id: row.id, reservation_id: row.reservation_id, reference_code: row.reference_code, user_id: row.user_id,
    pet_id: row.pet_id, clinic_id: row.clinic_id, service_id: row.service_id, slot_id: row.slot_id,
    payment_id: row.payment_id, amount: row.amount, status: row.status, cancellation_reason: row.cancellation_reason,
    notes: row.notes, pet_snapshot: row.pet_snapshot ?? {}, service_snapshot: row.service_snapshot ?? {},
    booking_time: row.booking_time, slot_date: row.slot_date, slot_start_time: row.slot_start_time,
    slot_end_time: row.slot_end_time, ends_at: row.ends_at,
    payment: row.p_id === null ? null : {
      id: row.p_id, external_reference: row.p_external_reference, amount: row.p_amount, currency: row.p_currency,
      payment_method: row.p_payment_method, status: row.p_status, paid_at: row.p_paid_at,
      refund_status: row.p_refund_status, refund_amount: row.p_refund_amount, refunded_at: row.p_refunded_at,
    },
    reschedule_count: row.reschedule_count,
    created_at: row.created_at, updated_at: row.updated_at,
  };
}

const canSee = (actor, userId, clinicId) =>
  actor.role === 'admin' || actor.role === 'service' ||
  (actor.role === 'user' ? actor.id === userId : actor.role === 'clinic_staff' && actor.clinic_id === clinicId);

class BookingsService {
  constructor(pool, signal) {
    this.pool = pool;
    this.signal = signal;
  }

  async confirm(dto) {
    const actor = requireSelf(dto.actor, dto.user_id);
    try {
      return await this.confirmOnce(dto, actor);
    } catch (err) {
      if (err.code !== '23505' || err.constraint !== RESERVATION_CONSTRAINT) throw err;
      // a concurrent confirm won (cannot happen while the row lock is held, kept as a safety net)
      const { rows: [existing] } = await this.pool.query(q('bookings.get_by_reservation', [dto.reservation_id]));
      if (!existing) throw rpcError('CONFLICT', 'A concurrent confirm failed; retry');
      return this.load(this.pool, existing.id);
    }
  }

  async load(client, bookingId) {
    const { rows: [row] } = await client.query(q('bookings.get', [bookingId]));
    return bookingOut(row);
  }

  async enqueue(client, aggregateId, eventType, aggregateType, event) {
    const id = randomUUID();
    const payload = { event_type: eventType, ...event, event_id: id, occurred_at: nowInstant() };
    await client.query(q('outbox.enqueue', [id, aggregateType, aggregateId, eventType, payload]));
  }

  async insertBooking(client, r, dto, paymentId, status) {
    const pet = { id: r.pet_id, name: r.pet_name, species: r.pet_species, breed: r.pet_breed };
    const service = {
      id: r.service_id, name: r.service_name, price: r.price, duration_minutes: r.duration_minutes,
      clinic_id: r.clinic_id, clinic_name: r.clinic_name,
    };
    for (let attempt = 0; ; attempt += 1) {
      await client.query('SAVEPOINT reference_code'); // a collision leaves the outer transaction usable
      try {
        const { rows: [row] } = await client.query(q('bookings.insert', [
          r.id, r.user_id, r.pet_id, r.clinic_id, r.service_id, r.slot_id, paymentId, referenceCode(), r.price,
          status, dto.notes ?? null, pet, service, r.starts_at,
        ]));
        await client.query('RELEASE SAVEPOINT reference_code');
        return row;
      } catch (err) {
        await client.query('ROLLBACK TO SAVEPOINT reference_code');
        if (err.code !== '23505' || err.constraint !== REFERENCE_CONSTRAINT || attempt === REFERENCE_ATTEMPTS - 1) throw err;
      }
    }
  }

  async confirmOnce(dto, actor) {
    const details = { reservation_id: dto.reservation_id };
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await this.confirmIn(client, dto, actor, details);
      await client.query('COMMIT');
      this.signal.committed();
      return result;
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  }

  async confirmIn(client, dto, actor, details) {
    const { rows: [r] } = await client.query(q('bookings.lock_reservation', [dto.reservation_id]));
    if (!r || r.user_id !== dto.user_id) throw rpcError('NOT_FOUND', 'Reservation not found', details);
    const a = Buffer.from(r.lock_id);
    const b = Buffer.from(dto.lock_id);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw rpcError('LOCK_MISMATCH', 'The lock_id does not match this reservation', details);
    }
    if (r.status === 'confirmed') {
      const { rows: [existing] } = await client.query(q('bookings.get_by_reservation', [r.id]));
      if (existing) return this.load(client, existing.id); // idempotent: the same booking
      throw rpcError('ALREADY_CONFIRMED', 'The reservation is already confirmed', details);
    }
    if (r.status === 'cancelled') {
      throw rpcError('ILLEGAL_TRANSITION', 'The reservation was cancelled', { ...details, from: 'cancelled' });
    }
    if (!r.live) throw rpcError('RESERVATION_EXPIRED', 'The reservation has expired', details);

    const status = r.requires_approval ? 'pending_approval' : 'confirmed';
    const paymentId = randomUUID();
    const booking = await this.insertBooking(client, r, dto, paymentId, status);
    const pay = dto.payment;
    const payStatus = pay ? pay.status : 'pending';
    const external = pay?.external_reference ?? null;
    const { rows: [prow] } = await client.query(q('payments.insert', [
      paymentId, booking.id, external, r.price, CURRENCY, pay ? pay.method : 'unspecified', payStatus,
      pay?.details ?? null,
    ]));
    const part = split(r.price);
    await client.query(q('bookings.insert_financial_entry', [
      booking.id, r.clinic_id, 'booking_payment', part.total, part.fee, part.clinic, part.tax, CURRENCY, 'pending',
      external,
    ]));
    if (status === 'confirmed') {
      const planned = planReminders(r);
      if (planned.length) {
        await client.query(q('bookings.insert_reminders', [booking.id, planned.map(([k]) => k), planned.map(([, at]) => at)]));
      }
    }
    await client.query(q('bookings.insert_log', [booking.id]));
    await client.query(q('bookings.append_log', [
      booking.id, 'created', status, { reservation_id: r.id, reservation_status: 'pending' },
      { status, payment_status: payStatus, amount: r.price }, actor.id, dto.notes ?? null,
    ]));
    const full = await this.load(client, booking.id);
    const when = `${r.slot_date} ${r.slot_start_time.slice(0, 5)}`;
    const meta = { booking_id: booking.id, reference_code: full.reference_code, status };
    const [kind, title, content] = status === 'confirmed'
      ? ['booking_confirmed', 'Booking confirmed', `Your booking ${full.reference_code} for ${r.service_name} on ${when} is confirmed.`]
      : ['booking_status_changed', 'Booking awaiting approval',
        `Your booking ${full.reference_code} for ${r.service_name} on ${when} is waiting for the clinic's approval.`];
    await client.query(q('notifications.insert', [r.user_id, booking.id, kind, title, content, meta]));
    await client.query(q('bookings.confirm_reservation', [r.id]));
    if (status === 'confirmed') {
      await this.enqueue(client, booking.id, 'booking.confirmed', 'booking', {
        booking_id: full.id, reference_code: full.reference_code, user_id: full.user_id, pet_id: full.pet_id,
        clinic_id: full.clinic_id, service_id: full.service_id, slot_date: full.slot_date,
        slot_time: full.slot_start_time, amount: full.amount,
        created_at: full.created_at ?? full.updated_at ?? full.ends_at,
      });
    }
    if (payStatus === 'success') {
      await this.enqueue(client, booking.id, 'payment.processed', 'booking', {
        payment_id: prow.id, booking_id: booking.id, amount: prow.amount, currency: prow.currency,
        payment_method: prow.payment_method, status: 'success', processed_at: prow.paid_at,
      });
    }
    return full;
  }

  async find(dto) {
    const actor = dto.actor;
    if (!actor) throw rpcError('UNAUTHENTICATED', 'This pattern needs an authenticated actor');
    const bookingId = dto.booking_id ?? dto.id ?? null;
    if (bookingId !== null || dto.reference_code) {
      const { rows: [row] } = bookingId !== null
        ? await this.pool.query(q('bookings.get', [bookingId]))
        : await this.pool.query(q('bookings.get_by_reference', [dto.reference_code.trim().toUpperCase()]));
      const items = row && canSee(actor, row.user_id, row.clinic_id) ? [bookingOut(row)] : [];
      return { items, next_cursor: null, total: dto.include_total ? items.length : null };
    }
    let userId = dto.user_id ?? null;
    let clinicId = dto.clinic_id ?? null;
    if (actor.role === 'user') {
      if (userId !== null && userId !== actor.id) throw rpcError('FORBIDDEN', 'A user may list only their own bookings');
      userId = actor.id;
    } else if (actor.role === 'clinic_staff') {
      if (!actor.clinic_id || (clinicId !== null && clinicId !== actor.clinic_id)) {
        throw rpcError('FORBIDDEN', "Clinic staff may list only their clinic's bookings");
      }
      clinicId = actor.clinic_id;
    }
    const bySlot = dto.sort === 'slot_time';
    let cursorAt = null;
    let cursorId = null;
    if (dto.cursor) {
      let values;
      try {
        values = JSON.parse(Buffer.from(dto.cursor, 'base64url').toString('utf8'));
      } catch { /* below */ }
      if (!Array.isArray(values) || values.length !== 3) throw rpcError('BAD_REQUEST', 'The cursor is not valid', { field: 'cursor' });
      if (values[0] !== dto.sort) throw rpcError('BAD_REQUEST', 'The cursor belongs to another sort order', { field: 'cursor' });
      [, cursorAt, cursorId] = values;
    }
    const args = [userId, clinicId, dto.status?.length ? dto.status : null, dto.date_from ?? null, dto.date_to ?? null, dto.upcoming_only];
    const statement = bySlot ? 'bookings.find_by_slot_time' : 'bookings.find_by_created';
    const { rows } = await this.pool.query(q(statement, [...args, cursorAt, cursorId, dto.limit + 1]));
    const total = dto.include_total ? (await this.pool.query(q('bookings.count', args))).rows[0].count : null;
    let nextCursor = null;
    if (rows.length > dto.limit) {
      const last = rows[dto.limit - 1];
      nextCursor = encodeCursor([dto.sort, bySlot ? last.starts_at : last.created_at, last.id]);
    }
    return { items: rows.slice(0, dto.limit).map(bookingOut), next_cursor: nextCursor, total };
  }
}
Inject(PG_POOL)(BookingsService, undefined, 0); // constructor(@Inject(PG_POOL) pool, signal: OutboxSignal)
Reflect.defineMetadata('design:paramtypes', [Object, OutboxSignalProvider], BookingsService);
const BookingsServiceProvider = Reflect.decorate([Injectable()], BookingsService);

class BookingsController {
  constructor(bookings) { this.bookings = bookings; }
  confirm(dto) { return this.bookings.confirm(dto); }
  find(dto) { return this.bookings.find(dto); }
}
Payload()(BookingsController.prototype, 'confirm', 0);
paramTypes(BookingsController, 'confirm', ConfirmDto);
decorateMethod(BookingsController, 'confirm', MessagePattern('booking.reservation.confirm'));
Payload()(BookingsController.prototype, 'find', 0);
paramTypes(BookingsController, 'find', BookingFindDto);
decorateMethod(BookingsController, 'find', MessagePattern('booking.booking.find'));
Reflect.defineMetadata('design:paramtypes', [BookingsServiceProvider], BookingsController);

// --- the module ---------------------------------------------------------------------------------------

const poolSize = Number(arg('pool', '10'));
class DatabaseModule {}
const Database = Reflect.decorate(
  [
    Module({
      providers: [
        {
          provide: PG_POOL,
          useFactory: () =>
            new pg.Pool({ connectionString: arg('database-url'), max: poolSize, options: '-c TimeZone=UTC' }),
        },
      ],
      exports: [PG_POOL],
    }),
  ],
  DatabaseModule,
);

class BookingModule {
  constructor(pool) { this.pool = pool; }
  onModuleDestroy() { return this.pool.end(); }
}
Inject(PG_POOL)(BookingModule, undefined, 0); // constructor(@Inject(PG_POOL) pool)
const App = Reflect.decorate(
  [
    Module({
      imports: [Database],
      controllers: [
        Reflect.decorate([Controller()], SlotsController),
        Reflect.decorate([Controller()], ReservationsController),
        Reflect.decorate([Controller()], BookingsController),
      ],
      providers: [OutboxSignalProvider, SlotsServiceProvider, ReservationsServiceProvider, BookingsServiceProvider],
    }),
  ],
  BookingModule,
);

const natsUrl = arg('nats', '');
const port = Number(arg('port', '0'));
const app = await NestFactory.createMicroservice(App, {
  transport: natsUrl ? Transport.NATS : Transport.TCP,
  options: natsUrl ? { servers: [natsUrl], queue: arg('queue', 'booking-rpc') } : { host: '127.0.0.1', port },
  logger: ['error'],
});
app.useGlobalPipes(
  new ValidationPipe({
    transform: true,
    whitelist: true,
    forbidNonWhitelisted: true, // booking-rpc refuses unknown fields too
    exceptionFactory: (errors) => {
      const details = [];
      const walk = (list, prefix) => {
        for (const e of list) {
          const field = prefix ? `${prefix}.${e.property}` : e.property;
          for (const [type, message] of Object.entries(e.constraints ?? {})) details.push({ field, message, type });
          walk(e.children ?? [], field);
        }
      };
      walk(errors, '');
      return rpcError('VALIDATION_FAILED', 'The payload is invalid', details);
    },
  }),
);
await app.listen();
// A NestJS TCP server leaves Nagle's algorithm on (ServerTCP has no noDelay option): with several requests in
// flight on one connection, a reply then waits for the ACK of the previous one, up to the client's delayed-ACK
// timeout (40 ms on Linux), and the benches would measure that instead of the work. Off unless --nagle.
if (!natsUrl && !process.argv.includes('--nagle')) app.unwrap().on('connection', (socket) => socket.setNoDelay(true));
if (natsUrl) await app.unwrap().flush(); // subscriptions registered at the server before we say ready
process.stdout.write(JSON.stringify({ port: natsUrl ? 0 : app.unwrap().address().port }) + '\n');
const stop = async () => {
  await app.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
