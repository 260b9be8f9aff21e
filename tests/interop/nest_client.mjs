// Drives a server with the genuine NestJS 12 ClientProxy (Transport.TCP, or Transport.NATS with --nats URL).
//   node nest_client.mjs --port P [--host H] [--msgpack] < scenario.json
//   node nest_client.mjs --nats nats://127.0.0.1:4222 < scenario.json   (ClientNats; same ops and output)
//     scenario: [{"op": "send"|"send_all"|"emit", "pattern": ..., "data": ..., "count"?: N, "timeout_ms"?: T,
//                 "metadata"?: {...}}]  (metadata: set on the op's packets by the client's onDispatchHook)
//     prints one JSON line per op: {"ok": value} | {"error": err as the client received it}
//     ("count" > 1 sends that many concurrently and prints {"ok": [values...]}; with "settle": true it prints
//      {"settled": [{"ok": value} | {"error": err}, ...]}, one per request)
//   node nest_client.mjs --port P --load --concurrency N --duration S [--warmup W] [--pattern echo]
//     closed-loop load; prints {"requests", "rps", "p50_ms", "p95_ms", "p99_ms", "sent", "errors"}
//     ("sent": every request, the warm-up's too; "errors": error replies, the load goes on past them)
//     --generator '{"kind": ...}': each request's payload made afresh (bench/peer.py):
//       {"kind": "slots.find", "service_id", "base_date", "days", "span_days", "limit"}: a random week's page;
//       {"kind": "reservation.create", "service_id", "slots": [...]}: a fresh user and pet on a random slot;
//       {"kind": "flow", "service_id", "slots": [...]}: create, confirm, then the user's booking.booking.find,
//         one after the other; latencies are the whole flow's
import 'reflect-metadata';
import { ClientProxyFactory, Transport } from '@nestjs/microservices';
import { lastValueFrom, timeout, toArray } from 'rxjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const options = { host: arg('host', '127.0.0.1'), port: Number(arg('port', '3000')) };
if (process.argv.includes('--msgpack')) {
  const { createMsgpackSocket } = await import('../../clients/nestjs/msgpack-socket.mjs');
  const { TcpSocket } = await import('@nestjs/microservices');
  const { encode, decode } = await import('@msgpack/msgpack');
  options.socketClass = createMsgpackSocket({ TcpSocket, encode, decode });
}
const natsUrl = arg('nats', '');
const client = natsUrl
  ? ClientProxyFactory.create({ transport: Transport.NATS, options: { servers: [natsUrl] } })
  : ClientProxyFactory.create({ transport: Transport.TCP, options });
// NestJS 12.0.4+: what instrumentation does to carry a trace (a traceparent) beside the payload
let currentMetadata;
client.setOnDispatchHook((packet) => {
  if (currentMetadata !== undefined) packet.metadata = currentMetadata;
});
await client.connect();

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const errorOf = (e) => (e instanceof Error ? { name: e.name, message: e.message } : e);

async function runOp(op) {
  const ms = op.timeout_ms ?? 10000;
  currentMetadata = op.metadata;
  if (op.op === 'emit') {
    await lastValueFrom(client.emit(op.pattern, op.data), { defaultValue: undefined });
    return { ok: null };
  }
  const one = () => {
    const obs = client.send(op.pattern, op.data).pipe(timeout(ms));
    return op.op === 'send_all' ? lastValueFrom(obs.pipe(toArray())) : lastValueFrom(obs);
  };
  if (op.settle) {
    // every request's own outcome (Promise.all would stop at the first error)
    const settled = await Promise.allSettled(Array.from({ length: op.count ?? 1 }, one));
    return { settled: settled.map((r) => (r.status === 'fulfilled' ? { ok: r.value } : { error: errorOf(r.reason) })) };
  }
  try {
    if ((op.count ?? 1) > 1) {
      return { ok: await Promise.all(Array.from({ length: op.count }, one)) };
    }
    return { ok: await one() };
  } catch (e) {
    return { error: errorOf(e) };
  }
}

const ECHO = { booking_id: '6f1c1f5e-8a55-4c3e-9a43-2f1e9a6b2c10', note: '猫🐕 bench', amount: '150000.00' };
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const addDays = (iso, days) => new Date(Date.parse(`${iso}T00:00:00Z`) + days * 86_400_000).toISOString().slice(0, 10);
const send = (pattern, data) => lastValueFrom(client.send(pattern, data));

// one unit of load (one request, or one whole flow) as the generator describes it
function unitOf(gen, pattern) {
  if (!gen) return () => send(pattern, ECHO);
  if (gen.kind === 'slots.find') {
    return () => {
      const from = addDays(gen.base_date, Math.floor(Math.random() * gen.days));
      return send('booking.slots.find', {
        service_id: gen.service_id, date_from: from, date_to: addDays(from, gen.span_days ?? 7), limit: gen.limit ?? 100,
      });
    };
  }
  const hold = (user) => send('booking.reservation.create', {
    actor: { id: user, role: 'user' }, user_id: user, pet_id: crypto.randomUUID(),
    service_id: gen.service_id, slot_id: pick(gen.slots),
  });
  if (gen.kind === 'reservation.create') return () => hold(crypto.randomUUID());
  if (gen.kind === 'flow') {
    return async () => {
      const user = crypto.randomUUID();
      const actor = { id: user, role: 'user' };
      const held = await hold(user);
      const booking = await send('booking.reservation.confirm', {
        actor, user_id: user, reservation_id: held.id, lock_id: held.lock_id,
        payment: { method: 'card', external_reference: `ext-${crypto.randomUUID()}`, status: 'success' },
      });
      const page = await send('booking.booking.find', { actor, user_id: user });
      if (page.items[0]?.id !== booking.id) throw { code: 'FLOW_MISMATCH' };
    };
  }
  throw new Error(`unknown generator kind ${gen.kind}`);
}

async function load() {
  const concurrency = Number(arg('concurrency', '64'));
  const duration = Number(arg('duration', '5')) * 1000;
  const warmup = Number(arg('warmup', '1')) * 1000;
  const generator = arg('generator', '');
  const unit = unitOf(generator ? JSON.parse(generator) : null, arg('pattern', 'echo'));
  const start = performance.now();
  const measureFrom = start + warmup;
  const end = measureFrom + duration;
  const latencies = [];
  const errors = {};
  let sent = 0;
  async function lane() {
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) return;
      sent += 1;
      try {
        await unit();
      } catch (e) {
        const code = e?.code ?? e?.message ?? String(e);
        errors[code] = (errors[code] ?? 0) + 1;
        continue;
      }
      if (t0 >= measureFrom) latencies.push(performance.now() - t0);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane));
  latencies.sort((a, b) => a - b);
  const pct = (q) => latencies[Math.min(latencies.length - 1, Math.round((q / 100) * (latencies.length - 1)))];
  out({
    requests: latencies.length, rps: latencies.length / (duration / 1000),
    p50_ms: pct(50), p95_ms: pct(95), p99_ms: pct(99), sent, errors,
  });
}

try {
  if (process.argv.includes('--load')) {
    await load();
  } else {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    const scenario = JSON.parse(Buffer.concat(chunks).toString('utf8') || '[]');
    for (const op of scenario) out(await runOp(op));
  }
} finally {
  await client.close();
}
await new Promise((resolve) => process.stdout.write("", resolve));
process.exit(0);
