"""A booking-rpc server with only the system handlers (ping, echo): the transport bench's target.

`python -m bench.echo_server --port 0 [--msgpack-port 0] [--no-uvloop]` prints {"port": N, "msgpack_port": M}.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import orjson

from booking_rpc.handlers.system import router
from booking_rpc.loop import new_event_loop
from booking_rpc.server.server import Server


async def main(port: int, msgpack_port: int | None) -> None:
    server = Server(router, None, host="127.0.0.1", port=port, msgpack_port=msgpack_port)
    await server.start()
    sys.stdout.write(orjson.dumps({"port": server.port, "msgpack_port": server.msgpack_port}).decode() + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--msgpack-port", type=int, default=None)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    factory = asyncio.new_event_loop if args.no_uvloop else new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.port, args.msgpack_port))
