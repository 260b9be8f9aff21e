// The NestJS 12 microservice the benches compare booking-rpc with: the same patterns doing the same work
// with the same named SQL statements (sql/queries/*.sql, read at start by queries.mjs), written as a NestJS
// developer writes one: controllers with @MessagePattern, DTOs checked by the ValidationPipe
// (class-validator), services with a node-postgres Pool injected, errors as RpcException in booking-rpc's
// error shape. Plain JavaScript with the decorators applied as TypeScript would emit them (no build step).
//   node peer.mjs --database-url postgresql://... [--port 0] [--pool 10]
//   node peer.mjs --database-url ... --nats nats://127.0.0.1:4222 [--queue booking-rpc]   (ServerNats)
//   node peer.mjs --print-sql     (the statements it loaded, as one JSON object: the tests compare them)
// Prints {"port": N} once listening (0 over NATS).
import 'reflect-metadata';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller, Inject, Injectable, Module, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MessagePattern, Payload, RpcException, Transport } from '@nestjs/microservices';
import { Type } from 'class-transformer';
import {
  IsBoolean,
  IsIn,
  IsInt,
  IsOptional,
  IsString,
  IsUUID,
  Length,
  Matches,
  Max,
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
  IDEMPOTENCY_CONFLICT: 409, TOO_MANY_HOLDS: 429,
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
// Named statements: node-postgres prepares each once per connection, as asyncpg does for booking-rpc.
const q = (name, values) => ({ name, text: SQL.get(name), values });

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
  if (row.starts_at < new Date(row.db_now.getTime() + row.min_notice_minutes * 60_000)) return 'TOO_SOON';
  if (row.max_advance_days !== null) {
    const today = new Date(`${localDate(row.db_now, zoneOrUtc(row.timezone))}T00:00:00Z`);
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
          HOLD_TTL_SECONDS, key, fp, MAX_HOLDS_PER_USER, MAX_HOLDS_PER_PET,
        ]));
        if (row) return reservationOut(row);
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

// --- the module ---------------------------------------------------------------------------------------

const poolSize = Number(arg('pool', '10'));
class DatabaseModule {}
const Database = Reflect.decorate(
  [
    Module({
      providers: [
        { provide: PG_POOL, useFactory: () => new pg.Pool({ connectionString: arg('database-url'), max: poolSize }) },
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
      ],
      providers: [SlotsServiceProvider, ReservationsServiceProvider],
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
if (natsUrl) await app.unwrap().flush(); // subscriptions registered at the server before we say ready
process.stdout.write(JSON.stringify({ port: natsUrl ? 0 : app.unwrap().address().port }) + '\n');
const stop = async () => {
  await app.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
