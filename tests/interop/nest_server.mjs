// A genuine NestJS 12 TCP microservice: the peer booking-rpc must be indistinguishable from, the
// subscriber the outbox relay delivers to, and the baseline of the transport bench.
//   node nest_server.mjs --port 0 [--events booking.created,booking.confirmed] [--msgpack]
//   node nest_server.mjs --nats nats://127.0.0.1:4222 [--queue nest] [--events ...]   (ServerNats, queue group)
// Prints {"port": N} once listening, then one JSON line {"pattern", "data", "metadata"?} per event received
// (metadata: what TcpContext.getMetadata() gives, when the packet carried any).
import 'reflect-metadata';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, Payload, RpcException, Transport } from '@nestjs/microservices';
import { from } from 'rxjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg('port', '0'));
const events = (arg('events', '') || '').split(',').filter(Boolean);
const useMsgpack = process.argv.includes('--msgpack');
// --stamp: each event line also carries when the handler ran (CLOCK_MONOTONIC seconds, as Python's
// time.perf_counter on Linux), so a bench's lag does not include its own reading of this output
const stamp = process.argv.includes('--stamp');

class AppController {
  echo(data) { return data; }
  sum(data) { return (data || []).reduce((a, b) => a + b, 0); }
  fail(data) { throw new RpcException(data); }
  stream(data) { return from(data || []); }
}

function decorateMethod(cls, name, decorator) {
  const descriptor = Object.getOwnPropertyDescriptor(cls.prototype, name);
  Reflect.decorate([decorator], cls.prototype, name, descriptor);
}

decorateMethod(AppController, 'echo', MessagePattern('echo'));
decorateMethod(AppController, 'sum', MessagePattern('sum'));
decorateMethod(AppController, 'fail', MessagePattern('fail'));
decorateMethod(AppController, 'stream', MessagePattern('stream'));
AppController.prototype.ping = function () { return 'pong'; };
AppController.prototype.nothing = function () { return undefined; };
AppController.prototype.sumObject = function (data) { return this.sum(data); };
decorateMethod(AppController, 'ping', MessagePattern('ping'));
decorateMethod(AppController, 'nothing', MessagePattern('nothing'));
decorateMethod(AppController, 'sumObject', MessagePattern({ cmd: 'sum', role: 'math' }));
events.forEach((pattern, i) => {
  const name = `event${i}`;
  AppController.prototype[name] = function (data, context) {
    const metadata = context?.getMetadata?.();
    const line = stamp
      ? { pattern, data, metadata, at: Number(process.hrtime.bigint()) / 1e9 }
      : { pattern, data, metadata };
    process.stdout.write(JSON.stringify(line) + '\n');
  };
  // @Payload() data, @Ctx() context: the parameter decorators, applied as TypeScript would
  Payload()(AppController.prototype, name, 0);
  Ctx()(AppController.prototype, name, 1);
  decorateMethod(AppController, name, EventPattern(pattern));
});

const Ctl = Reflect.decorate([Controller()], AppController);
class AppModule {}
const Mod = Reflect.decorate([Module({ controllers: [Ctl] })], AppModule);

const options = { host: '127.0.0.1', port };
if (useMsgpack) {
  const { createMsgpackSocket } = await import('../../clients/nestjs/msgpack-socket.mjs');
  const { TcpSocket } = await import('@nestjs/microservices');
  const { encode, decode } = await import('@msgpack/msgpack');
  options.socketClass = createMsgpackSocket({ TcpSocket, encode, decode });
}
const natsUrl = arg('nats', '');
const app = natsUrl
  ? await NestFactory.createMicroservice(Mod, {
      transport: Transport.NATS,
      options: { servers: [natsUrl], queue: arg('queue', 'nest'), gracefulShutdown: true, gracePeriod: 100 },
      logger: false,
    })
  : await NestFactory.createMicroservice(Mod, { transport: Transport.TCP, options, logger: false });
await app.listen();
let bound = port;
try {
  const server = app.unwrap();
  if (server && typeof server.address === 'function') bound = server.address().port;
} catch { /* older versions: the port given is the port used */ }
if (natsUrl) {
  // ServerNats subscribes without waiting for the server to register it: a flush round trip does
  await app.unwrap().flush();
}
process.stdout.write(JSON.stringify({ port: natsUrl ? 0 : bound }) + '\n');
const stop = async () => { await app.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
