// A NestJS TCP `socketClass` speaking booking-rpc's msgpack framing: a 4-byte big-endian length, then a
// msgpack map with the usual {pattern, data, id} / {response | err, isDisposed, id} shapes.
//
// It takes NestJS's TcpSocket base and a msgpack encode/decode from the application, so it resolves
// them from the application's own node_modules and adds no dependency of its own:
//
//   import { TcpSocket } from '@nestjs/microservices';
//   import { encode, decode } from '@msgpack/msgpack';
//   import { createMsgpackSocket } from './msgpack-socket.mjs';
//   const MsgpackSocket = createMsgpackSocket({ TcpSocket, encode, decode });
//   ClientProxyFactory.create({ transport: Transport.TCP, options: { host, port, socketClass: MsgpackSocket } });

const HEADER = 4;
const DEFAULT_MAX_FRAME = 8 * 1024 * 1024;

export function createMsgpackSocket({ TcpSocket, encode, decode, maxFrameBytes = DEFAULT_MAX_FRAME }) {
  return class MsgpackSocket extends TcpSocket {
    buffer = Buffer.alloc(0);

    handleSend(message, callback) {
      const body = encode(message);
      const frame = Buffer.allocUnsafe(HEADER + body.length);
      frame.writeUInt32BE(body.length, 0);
      frame.set(body, HEADER);
      this.socket.write(frame, callback);
    }

    handleData(data) {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
      while (this.buffer.length >= HEADER) {
        const length = this.buffer.readUInt32BE(0);
        if (length > maxFrameBytes) {
          throw new Error(`The packet length (${length}) exceeds the maximum allowed length`);
        }
        if (this.buffer.length < HEADER + length) return;
        const body = this.buffer.subarray(HEADER, HEADER + length);
        this.buffer = this.buffer.subarray(HEADER + length);
        let message;
        try {
          message = decode(body);
        } catch (e) {
          throw new Error(`Could not decode msgpack: ${e.message}`);
        }
        this.socket.emit('message', message || {});
      }
    }
  };
}
